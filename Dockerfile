# syntax=docker/dockerfile:1
#
# bitquery-proxy container image.
#
#   docker build -t bitquery-proxy:0.1.0 .
#   docker run --rm -p 127.0.0.1:8080:8080 --env-file .env -e PROXY_ALLOW_UNAUTHENTICATED=true bitquery-proxy:0.1.0
#
# No credentials are baked in: BITQUERY_* come from the environment at run time (or from files via
# BITQUERY_CLIENT_SECRET_FILE / BITQUERY_TOKEN_FILE). test/deploy/dockerfile.test.ts checks the facts
# below; test/deploy/production-install.test.ts runs the final stage's install step outside Docker.

# ---- build: dev dependencies, TypeScript -> dist/ ---------------------------------------------
FROM node:24-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY . .
RUN npm run build

# ---- runtime: production dependencies only -----------------------------------------------------
FROM node:24-slim AS runtime
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=8080
WORKDIR /app
# Installed as root and owned by root: the non-root user below can read the code but not change it.
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist ./dist
COPY --from=build /app/config ./config

# The image's `node` user, by number so that Kubernetes' runAsNonRoot can verify it.
USER 1000:1000
EXPOSE 8080

# Liveness of the process only (/readyz tells whether a token is held). Node's fetch: no curl in the image.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||8080)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]

# Exec form, no shell and no npm in between: SIGTERM reaches node, which drains for
# SHUTDOWN_TIMEOUT_MS and exits. Node as PID 1 is fine here: the CLI handles SIGTERM/SIGINT itself
# and starts no child processes to reap.
ENTRYPOINT ["node", "dist/cli.js"]
