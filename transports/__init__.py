"""Wire protocols: decode a request, call the domain, encode its events. Nothing else."""
