# fhir-rte: `docker build -t fhir-rte .`, then e.g. the REST-hook receiver (it listens beyond loopback only
# with a secret), or a Kafka member:
#   docker run --rm -p 8090:8090 -e DATABASE_URL=postgres://... -e FHIR_RTE_HTTP_HOST=0.0.0.0 \
#     -e FHIR_RTE_RESTHOOK_SECRET=... -e FHIR_RTE_FHIR_SERVER_URL=http://hapi:8080/fhir fhir-rte start
#   docker run --rm -e DATABASE_URL=postgres://... -e KAFKA_BROKERS=kafka:9092 fhir-rte start
# Transformers are read from /app/transformers (the examples are baked in; mount your own over them).

FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: `prepare` would build before the sources are here, and the embedded Postgres binaries
# are not needed in a container that is given DATABASE_URL.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
COPY migrations ./migrations
COPY bench ./bench
COPY test/support ./test/support
RUN npm run build && npm prune --omit=dev --ignore-scripts

FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
# The failed-message console's page: static files, served from where they are in the source tree.
COPY src/http/console ./src/http/console
COPY package.json ./
COPY bin ./bin
COPY transformers ./transformers
USER node
# Logs are JSON lines on stderr; SIGTERM (docker stop) lets the transactions in flight finish (Kafka: commits
# their offsets and leaves the consumer group; REST-hook: answers their deliveries) and exits. Give it the
# grace period: `docker stop -t 30`.
STOPSIGNAL SIGTERM
# The REST-hook receiver (http.port).
EXPOSE 8090
# The node flags of bin/fhir-rte.js's shebang (the shebang is not read when node runs the file).
ENTRYPOINT ["node", "--max-semi-space-size=16", "--heap-growing-percent=150", "bin/fhir-rte.js"]
CMD ["start"]
