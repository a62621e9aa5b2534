# Image for deploy/ (web, workers, beat all run `incident-bot …`). Runs as uid 1000 with a read-only root
# filesystem; /tmp is an emptyDir in the manifests. Build: docker build -t <registry>/llmd-incident-bot:0.1.0 .
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY workers ./workers
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.12-slim
RUN groupadd --gid 1000 incident-bot \
 && useradd --uid 1000 --gid 1000 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin incident-bot
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-compile /wheels/*.whl && rm -rf /wheels
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp
USER 1000:1000
EXPOSE 8080
CMD ["incident-bot", "serve", "--host", "0.0.0.0", "--port", "8080"]
