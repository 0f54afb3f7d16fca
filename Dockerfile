FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 DATA_DIR=/data
WORKDIR /srv
COPY pyproject.toml README.md ./
COPY app ./app
COPY domain ./domain
COPY transports ./transports
RUN pip install --no-cache-dir . && useradd --create-home chat && mkdir -p /data && chown chat /data
USER chat
VOLUME /data
EXPOSE 8000
CMD ["chat-server", "serve", "--host", "0.0.0.0", "--port", "8000"]
