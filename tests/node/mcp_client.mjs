// The server's tools at /mcp through the official MCP TypeScript SDK (`@modelcontextprotocol/sdk`'s
// Client over Streamable HTTP). Each step is "list" (the tool names) or "[accept:|decline:]<tool>
// <JSON arguments>"; a step with an answer makes the client declare elicitation and give that
// answer when asked to confirm. Prints one JSON line: a result per step.
//   node mcp_client.mjs <url of /mcp> <token> <step>...
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { ElicitRequestSchema } from "@modelcontextprotocol/sdk/types.js";

const [, , url, token, ...steps] = process.argv;
const answers = steps.some((step) => /^(accept|decline):/.test(step));
const client = new Client({ name: "chat-server-tests", version: "1.0.0" },
  { capabilities: answers ? { elicitation: {} } : {} });

let answer = "decline";
let asked = [];
if (answers) {
  client.setRequestHandler(ElicitRequestSchema, async (request) => {
    asked.push(request.params.message);
    return answer === "accept" ? { action: "accept", content: {} } : { action: answer };
  });
}

const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { Authorization: `Bearer ${token}` } },
});
await client.connect(transport);
const results = [];
for (const step of steps) {
  if (step === "list") {
    results.push((await client.listTools()).tools.map((tool) => tool.name));
    continue;
  }
  const [, given, name, args] = step.match(/^(?:(accept|decline):)?(\S+)\s*(.*)$/);
  answer = given ?? "decline";
  asked = [];
  const called = await client.callTool({ name, arguments: JSON.parse(args || "{}") });
  results.push({ isError: Boolean(called.isError), value: JSON.parse(called.content[0].text), asked });
}
await transport.terminateSession();
await client.close();
console.log(JSON.stringify(results));
