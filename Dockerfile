# One image for every MasterLinc service; compose.yaml picks the command.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY hub ./hub
COPY schemas ./schemas
COPY agents ./agents
COPY migrations ./migrations
RUN pip install --no-cache-dir ".[postgres]" && useradd --system --uid 10001 masterlinc
USER masterlinc
EXPOSE 8080
CMD ["masterlinc", "--help"]
