// Keeps the deployment files honest: every YAML document under deploy/kubernetes/ and
// docker-compose.yml is parsed and checked for the facts the READMEs promise (probes, non-root,
// secrets as files, ports, replicas, drain time), and every setting they name must exist in
// src/config/settings.ts, so a renamed or misspelt variable fails here instead of being silently ignored.
// "Every setting" means the proxy's own: the proxy containers (image bitquery-proxy) and the compose
// service built from the Dockerfile; an app container's variables are the app's business.
import t from 'tap';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, posix, resolve } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { loadConfig, SETTINGS } from '../../src/config/index.js';

const ROOT = resolve(import.meta.dirname, '../..');
const K8S_DIR = join(ROOT, 'deploy/kubernetes');
const COMPOSE = join(ROOT, 'docker-compose.yml');
const ENV_EXAMPLE = join(ROOT, '.env.example');

const KNOWN = new Set(SETTINGS.map((s) => s.name));
/** Settings whose value is a credential: never written into a manifest as a plain value. */
const CREDENTIALS = new Set([...SETTINGS.filter((s) => s.secret).map((s) => s.name), 'BITQUERY_CLIENT_ID', 'PROXY_API_KEYS']);

const GATEWAY_KEYS_FILE = '/var/run/secrets/bitquery-proxy/keys/keys';
const CLIENT_SECRET_FILE = '/var/run/secrets/bitquery/client-secret';
const PROXY_PORT = 8080;
/** The admin listener's port (metrics, probes, status page), as the manifests set it. */
const ADMIN_PORT = 9464;

// ---- loading ---------------------------------------------------------------------------------

// Parsed YAML is untyped: these describe only what the checks read.
type Labels = Record<string, string>;
interface EnvVar { name: string; value?: string; valueFrom?: { secretKeyRef?: { name: string; key: string }; configMapKeyRef?: { name: string; key: string } } }
interface Probe { httpGet?: { path?: string; port?: number | string }; exec?: { command?: string[] }; tcpSocket?: unknown; grpc?: unknown }
interface SecurityContext {
  runAsNonRoot?: boolean;
  runAsUser?: number;
  readOnlyRootFilesystem?: boolean;
  allowPrivilegeEscalation?: boolean;
  capabilities?: { drop?: string[] };
  seccompProfile?: { type?: string };
}
interface Container {
  name: string;
  image?: string;
  restartPolicy?: string;
  args?: string[];
  env?: EnvVar[];
  ports?: { name?: string; containerPort: number }[];
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean; subPath?: string }[];
  readinessProbe?: Probe;
  livenessProbe?: Probe;
  startupProbe?: Probe;
  lifecycle?: { preStop?: { exec?: { command?: string[] }; sleep?: { seconds: number }; httpGet?: unknown } };
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
  securityContext?: SecurityContext;
}
interface PodSpec {
  containers: Container[];
  initContainers?: Container[];
  volumes?: { name: string; secret?: { secretName: string; items?: { key: string; path: string }[] } }[];
  securityContext?: SecurityContext;
  terminationGracePeriodSeconds?: number;
}
interface Doc {
  apiVersion: string;
  kind: string;
  metadata: { name: string; labels?: Labels };
  spec?: any;
}
interface Workload {
  file: string;
  doc: Doc;
  pod: PodSpec;
  podLabels: Labels;
  podAnnotations: Record<string, string>;
}

/**
 * The documents of a YAML file. Kubernetes reads YAML 1.1 (where `on`, `yes` and `0644` are not
 * strings), the `yaml` package 1.2 by default: both readings must agree, so no value is ambiguous.
 */
function readYaml(path: string): unknown[] {
  const text = readFileSync(path, 'utf8');
  const read = (version: '1.1' | '1.2') =>
    parseAllDocuments(text, { version }).map((d) => {
      const problems = [...d.errors, ...d.warnings];
      if (problems.length) throw new Error(`${path}: ${problems.map((p) => p.message).join('; ')}`);
      return d.toJS() as unknown;
    });
  const docs = read('1.2');
  const v11 = read('1.1');
  if (JSON.stringify(docs) !== JSON.stringify(v11)) {
    throw new Error(`${path} reads differently as YAML 1.1 and 1.2: quote the ambiguous values`);
  }
  return docs.filter((d) => d !== null && d !== undefined);
}

const k8sFiles = readdirSync(K8S_DIR)
  .filter((f) => /\.ya?ml$/.test(f))
  .sort()
  .map((f) => join(K8S_DIR, f));

const k8sDocs: { file: string; doc: Doc }[] = k8sFiles.flatMap((file) =>
  readYaml(file).map((doc) => ({ file: basename(file), doc: doc as Doc })),
);

const POD_TEMPLATE_KINDS = new Set(['Deployment', 'StatefulSet', 'DaemonSet', 'ReplicaSet', 'Job']);
const workloads: Workload[] = k8sDocs.flatMap(({ file, doc }): Workload[] => {
  if (doc.kind === 'Pod') return [{ file, doc, pod: doc.spec as PodSpec, podLabels: doc.metadata.labels ?? {}, podAnnotations: (doc.metadata as { annotations?: Record<string, string> }).annotations ?? {} }];
  if (POD_TEMPLATE_KINDS.has(doc.kind)) {
    const meta = doc.spec.template.metadata;
    return [{ file, doc, pod: doc.spec.template.spec as PodSpec, podLabels: meta?.labels ?? {}, podAnnotations: meta?.annotations ?? {} }];
  }
  return [];
});

/** redis.yaml's workload runs Redis, not the proxy: it has checks of its own. */
const proxyWorkloads = () => workloads.filter((w) => w.file !== 'redis.yaml');
const isProxy = (c: Container) => /(^|[/:])bitquery-proxy(:|@|$)/.test(c.image ?? '');
const allContainers = (pod: PodSpec) => [...(pod.initContainers ?? []), ...pod.containers];
const proxyContainers = (w: Workload) => allContainers(w.pod).filter(isProxy);

const env = (c: Container) => new Map((c.env ?? []).map((e) => [e.name, e]));
const envValue = (c: Container, name: string) => env(c).get(name)?.value;
const settingDefault = (name: string) => SETTINGS.find((s) => s.name === name)?.default;
const LOOPBACK = /^(127\.\d+\.\d+\.\d+|localhost|::1)$/;

/** The USER of the Dockerfile's final stage, as the numeric UID the manifests must run as. */
function dockerfileUid(): number {
  const users = [...readFileSync(join(ROOT, 'Dockerfile'), 'utf8').matchAll(/^\s*USER\s+(\S+)/gim)];
  const user = users.at(-1)?.[1] ?? '';
  return Number(user.split(':')[0]);
}

const matches = (selector: Labels | undefined, labels: Labels) =>
  !!selector && Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => labels[k] === v);

/** CPU in cores and memory in bytes, from Kubernetes quantities like 50m, 1, 64Mi, 1G. */
function quantity(q: string): number {
  const m = /^(\d+(?:\.\d+)?)(m|k|Ki|M|Mi|G|Gi|T|Ti)?$/.exec(String(q));
  if (!m) throw new Error(`cannot read the quantity "${q}"`);
  const scale: Record<string, number> = { '': 1, m: 1e-3, k: 1e3, Ki: 2 ** 10, M: 1e6, Mi: 2 ** 20, G: 1e9, Gi: 2 ** 30, T: 1e12, Ti: 2 ** 40 };
  return Number(m[1]) * scale[m[2] ?? '']!;
}

/** A container port by number or name, as a number. */
const portNumber = (c: Container, port: number | string | undefined) => (typeof port === 'number' ? port : c.ports?.find((p) => p.name === port)?.containerPort);

/** Where an httpGet probe looks (the kubelet connects to the pod IP); undefined for any other kind. */
function probeTarget(probe: Probe, c: Container): { path: string; port: number } | undefined {
  if (!probe.httpGet) return undefined;
  return { path: probe.httpGet.path ?? '/', port: portNumber(c, probe.httpGet.port) ?? NaN };
}

/** Milliseconds of the preStop pause, 0 without one. */
function preStopPauseMs(c: Container): number {
  const preStop = c.lifecycle?.preStop;
  if (!preStop) return 0;
  if (preStop.sleep) return preStop.sleep.seconds * 1000;
  const command = preStop.exec?.command ?? [];
  const m = /setTimeout\([^,]*,\s*(\d+)\s*\)/.exec(command.join(' '));
  if (command[0] === 'node' && m) return Number(m[1]);
  throw new Error(`${c.name}: preStop ${JSON.stringify(preStop)} is not a pause this test can read`);
}

/**
 * Runs the real configuration loader on a container's settings, so values of the wrong type or
 * out of range fail here: values from Secrets get placeholders, *_FILE settings point to temp files.
 */
const scratch = mkdtempSync(join(tmpdir(), 'bqp-deploy-'));
t.teardown(() => rmSync(scratch, { recursive: true, force: true }));

function loadWith(settings: Record<string, string>, dotenvPath?: string) {
  const dir = mkdtempSync(join(scratch, 'settings-'));
  const local: Record<string, string> = {};
  for (const [name, value] of Object.entries(settings)) {
    if (name.endsWith('_FILE')) {
      const file = join(dir, name);
      // Long enough to pass as an inbound key too (at least 16 characters).
      writeFileSync(file, 'placeholder-0123456789abcdef\n');
      local[name] = file;
    } else {
      local[name] = value;
    }
  }
  return loadConfig(local, { dotenvPath: dotenvPath ?? join(dir, 'absent.env') });
}

// ---- Kubernetes --------------------------------------------------------------------------------

t.test('deploy/kubernetes holds sidecar.yaml and gateway.yaml, every document complete', async (t) => {
  t.same(k8sFiles.map((f) => basename(f)), ['gateway.yaml', 'redis.yaml', 'sidecar.yaml'], 'the two manifests and the Redis beside the gateway');
  t.ok(k8sDocs.length >= 5, 'documents were read');
  for (const { file, doc } of k8sDocs) {
    t.ok(doc.apiVersion && doc.kind && doc.metadata?.name, `${file}: ${doc.kind}/${doc.metadata?.name} has apiVersion, kind and name`);
  }
  t.notOk(k8sDocs.some(({ doc }) => doc.kind === 'Secret'), 'no Secret object: credentials stay out of git');
  t.ok(proxyWorkloads().length >= 2 && proxyWorkloads().every((w) => proxyContainers(w).length === 1), 'each workload runs one proxy container');
});

for (const w of proxyWorkloads()) {
  for (const c of proxyContainers(w)) {
    t.test(`${w.file}: ${w.doc.kind}/${w.doc.metadata.name}, container ${c.name}`, async (t) => {
      const vars = env(c);
      const host = envValue(c, 'HOST');
      const loopback = LOOPBACK.test(host ?? '');

      t.test('settings exist and hold no credential values', async (t) => {
        t.equal((c.env ?? []).length, vars.size, 'no variable is set twice');
        for (const name of vars.keys()) t.ok(KNOWN.has(name), `${name} is a setting in SETTINGS`);
        for (const name of CREDENTIALS) t.equal(vars.get(name)?.value, undefined, `${name} is not a plain value`);
        t.ok(host, 'HOST is set');
        t.equal(envValue(c, 'PORT'), String(PROXY_PORT), `PORT is ${PROXY_PORT}`);
        const settings: Record<string, string> = {};
        for (const e of vars.values()) settings[e.name] = e.value ?? (e.name === 'REDIS_URL' ? 'redis://:placeholder@redis:6379/0' : 'placeholder');
        t.doesNotThrow(() => loadWith(settings), 'loadConfig accepts the settings');
      });

      t.test('secrets are files from a Secret volume', async (t) => {
        const fileVars = [...vars.values()].filter((e) => e.name.endsWith('_FILE'));
        t.ok(fileVars.some((e) => e.name === 'BITQUERY_CLIENT_SECRET_FILE' || e.name === 'BITQUERY_TOKEN_FILE'), 'the Bitquery secret comes from a file');
        for (const e of fileVars) {
          t.ok(e.value?.startsWith('/'), `${e.name} is an absolute path`);
          const mount = (c.volumeMounts ?? []).find((m) => e.value!.startsWith(`${m.mountPath.replace(/\/$/, '')}/`));
          if (!t.ok(mount, `${e.name}=${e.value} lies in a volume mount`)) continue;
          t.equal(mount!.readOnly, true, `${mount!.mountPath} is read-only`);
          t.equal(mount!.subPath, undefined, `${mount!.mountPath} has no subPath (it would stop Secret updates)`);
          const volume = w.pod.volumes?.find((v) => v.name === mount!.name);
          if (!t.ok(volume?.secret?.secretName, `volume ${mount!.name} is a Secret`)) continue;
          const file = posix.relative(mount!.mountPath, e.value!);
          t.ok(volume!.secret!.items?.some((i) => i.path === file), `the Secret's items put a file at ${file}`);
        }
        if (vars.has('BITQUERY_CLIENT_SECRET_FILE')) t.equal(envValue(c, 'BITQUERY_CLIENT_SECRET_FILE'), CLIENT_SECRET_FILE);
        const id = vars.get('BITQUERY_CLIENT_ID');
        if (id) t.ok(id.valueFrom?.secretKeyRef || id.valueFrom?.configMapKeyRef, 'BITQUERY_CLIENT_ID comes from a Secret or ConfigMap');
      });

      t.test('probes: httpGet on the admin port, /readyz for readiness, /healthz for liveness', async (t) => {
        t.equal(envValue(c, 'ADMIN_PORT'), String(ADMIN_PORT), `ADMIN_PORT is ${ADMIN_PORT}`);
        // The kubelet's httpGet connects to the pod IP, which a loopback listener never answers.
        t.equal(envValue(c, 'ADMIN_HOST'), '0.0.0.0', 'ADMIN_HOST=0.0.0.0: the admin listener answers at the pod IP');
        t.ok(c.ports?.some((p) => p.name === 'admin' && p.containerPort === ADMIN_PORT), `containerPort ${ADMIN_PORT} is declared, named admin`);
        const probes = { readinessProbe: '/readyz', livenessProbe: '/healthz', startupProbe: '/healthz' } as const;
        for (const [kind, path] of Object.entries(probes) as [keyof typeof probes, string][]) {
          const probe = c[kind];
          if (kind === 'startupProbe' && !probe) continue;
          if (!t.ok(probe, `${kind} is set`)) continue;
          const target = probeTarget(probe!, c);
          if (!t.ok(target, `${kind} is httpGet (no exec probe starting a node process each time)`)) continue;
          t.equal(target!.path, path, `${kind} asks ${path}`);
          t.equal(target!.port, ADMIN_PORT, `${kind} asks the admin port ${ADMIN_PORT}`);
        }
        if (!loopback) t.ok(c.ports?.some((p) => p.containerPort === PROXY_PORT), `containerPort ${PROXY_PORT} is declared`);
      });

      t.test('Prometheus scrapes the admin port (pod annotations)', async (t) => {
        const a = w.podAnnotations;
        t.equal(a['prometheus.io/scrape'], 'true', 'prometheus.io/scrape: "true"');
        t.equal(a['prometheus.io/port'], String(ADMIN_PORT), `prometheus.io/port: "${ADMIN_PORT}"`);
        t.equal(a['prometheus.io/path'] ?? '/metrics', '/metrics', 'prometheus.io/path is /metrics');
      });

      t.test('hardened: non-root, read-only root, no privileges', async (t) => {
        const own = c.securityContext ?? {};
        const pod = w.pod.securityContext ?? {};
        t.equal(own.runAsNonRoot ?? pod.runAsNonRoot, true, 'runAsNonRoot');
        const uid = own.runAsUser ?? pod.runAsUser;
        t.ok(Number.isInteger(uid) && uid! > 0, 'runAsUser is a numeric non-root UID');
        t.equal(uid, dockerfileUid(), "runAsUser is the Dockerfile's USER");
        t.equal(own.readOnlyRootFilesystem, true, 'readOnlyRootFilesystem');
        t.equal(own.allowPrivilegeEscalation, false, 'allowPrivilegeEscalation is false');
        t.ok(own.capabilities?.drop?.includes('ALL'), 'all capabilities dropped');
        t.equal((own.seccompProfile ?? pod.seccompProfile)?.type, 'RuntimeDefault', 'seccomp RuntimeDefault');
      });

      t.test('resources, image, lifecycle', async (t) => {
        for (const r of ['cpu', 'memory']) {
          const request = c.resources?.requests?.[r];
          const limit = c.resources?.limits?.[r];
          if (t.ok(request && limit, `${r} request and limit are set`)) t.ok(quantity(request!) <= quantity(limit!), `${r} request <= limit`);
        }
        t.match(c.image, /:[\w.-]+$/, 'the image has a tag');
        t.notMatch(c.image, /:latest$/, 'the image is not :latest');
        if (w.pod.initContainers?.includes(c)) {
          // Without it an init container must exit before the app starts: the pod would never start.
          t.equal(c.restartPolicy, 'Always', 'as an init container it is a native sidecar (restartPolicy: Always)');
        }
        const grace = w.pod.terminationGracePeriodSeconds ?? 30;
        const drain = Number(envValue(c, 'SHUTDOWN_TIMEOUT_MS') ?? settingDefault('SHUTDOWN_TIMEOUT_MS'));
        const pause = preStopPauseMs(c);
        t.ok(grace * 1000 > drain + pause, `terminationGracePeriodSeconds ${grace} s > preStop ${pause} ms + SHUTDOWN_TIMEOUT_MS ${drain} ms`);
      });

      t.test('inbound access', async (t) => {
        if (loopback) {
          t.pass('loopback only: reachable from its own pod alone');
          return;
        }
        t.ok(vars.has('PROXY_API_KEYS_FILE') || vars.get('PROXY_API_KEYS')?.valueFrom, 'a non-loopback listener requires inbound API keys');
        t.not(envValue(c, 'PROXY_ALLOW_UNAUTHENTICATED'), 'true', 'and is not left open');
      });
    });
  }
}

t.test('sidecar.yaml: the proxy next to an app, on loopback', async (t) => {
  const ws = workloads.filter((w) => w.file === 'sidecar.yaml');
  t.equal(ws.length, 1, 'one workload');
  const w = ws[0]!;
  const proxy = proxyContainers(w)[0]!;
  t.equal(envValue(proxy, 'HOST'), '127.0.0.1', 'HOST=127.0.0.1: the proxied port stays on loopback');
  t.equal(envValue(proxy, 'ADMIN_HOST'), '0.0.0.0', 'while the admin listener is on the pod IP');
  t.ok(allContainers(w.pod).some((c) => !isProxy(c)), 'an app container shares the pod');
  t.equal(envValue(proxy, 'BITQUERY_CLIENT_SECRET_FILE'), CLIENT_SECRET_FILE);
});

t.test('gateway.yaml: Deployment, Service, PodDisruptionBudget, HorizontalPodAutoscaler', async (t) => {
  const docs = k8sDocs.filter((d) => d.file === 'gateway.yaml').map((d) => d.doc);
  const of = (kind: string) => docs.filter((d) => d.kind === kind);
  const deployments = of('Deployment');
  t.equal(deployments.length, 1, 'one Deployment');
  const deployment = deployments[0]!;
  const w = workloads.find((x) => x.doc === deployment)!;
  const labels = w.podLabels;
  const proxy = proxyContainers(w)[0]!;

  t.ok(deployment.spec.replicas >= 2, 'replicas >= 2');
  t.ok(matches(deployment.spec.selector?.matchLabels, labels), "the Deployment's selector matches its pods");
  t.equal(envValue(proxy, 'HOST'), '0.0.0.0', 'HOST=0.0.0.0');
  t.equal(envValue(proxy, 'PROXY_API_KEYS_FILE'), GATEWAY_KEYS_FILE, 'the inbound keys file');
  t.ok(proxy.lifecycle?.preStop, 'a preStop pause lets the endpoints go before the drain');

  const services = of('Service');
  t.equal(services.length, 1, 'one Service');
  const service = services[0]!;
  t.equal(service.spec.type ?? 'ClusterIP', 'ClusterIP', 'ClusterIP');
  t.ok(matches(service.spec.selector, labels), "the Service's selector matches the pods");
  const port = service.spec.ports?.find((p: { port: number }) => p.port === 80);
  if (t.ok(port, 'the Service listens on 80')) {
    const target = typeof port.targetPort === 'number' ? port.targetPort : proxy.ports?.find((p) => p.name === port.targetPort)?.containerPort;
    t.equal(target, PROXY_PORT, `80 goes to the container's ${PROXY_PORT}`);
  }

  const pdbs = of('PodDisruptionBudget');
  t.equal(pdbs.length, 1, 'one PodDisruptionBudget');
  t.equal(pdbs[0]?.apiVersion, 'policy/v1');
  t.equal(pdbs[0]?.spec.minAvailable, 1, 'minAvailable 1');
  t.ok(pdbs[0]?.spec.minAvailable < deployment.spec.replicas, 'fewer than the replicas, so a node can still drain');
  t.ok(matches(pdbs[0]?.spec.selector?.matchLabels, labels), "the PodDisruptionBudget's selector matches the pods");

  const hpas = of('HorizontalPodAutoscaler');
  t.equal(hpas.length, 1, 'one HorizontalPodAutoscaler');
  const hpa = hpas[0]!;
  t.equal(hpa.apiVersion, 'autoscaling/v2');
  t.same(
    { kind: hpa.spec.scaleTargetRef?.kind, name: hpa.spec.scaleTargetRef?.name },
    { kind: 'Deployment', name: deployment.metadata.name },
    'it scales the Deployment',
  );
  t.ok(hpa.spec.minReplicas >= 2, 'minReplicas >= 2');
  t.ok(hpa.spec.maxReplicas >= hpa.spec.minReplicas, 'maxReplicas >= minReplicas');
  t.ok(
    hpa.spec.metrics?.some(
      (m: { type: string; resource?: { name: string; target?: { type: string } } }) =>
        m.type === 'Resource' && m.resource?.name === 'cpu' && m.resource.target?.type === 'Utilization',
    ),
    'on CPU utilization',
  );

  for (const np of of('NetworkPolicy')) {
    t.ok(matches(np.spec.podSelector?.matchLabels, labels), 'the NetworkPolicy selects the pods');
    const opened = new Set<number | undefined>();
    for (const rule of np.spec.ingress ?? []) {
      const ports = (rule.ports ?? []).map((p: { port: number | string }) => portNumber(proxy, p.port));
      for (const n of ports) opened.add(n);
      const fromClients = (rule.from ?? []).some((f: { podSelector?: { matchLabels?: Labels } }) => f.podSelector?.matchLabels?.['bitquery-proxy-client'] === 'true');
      if (fromClients) t.same(ports, [PROXY_PORT], `client pods may reach ${PROXY_PORT} only, not the admin port`);
    }
    t.same([...opened].sort(), [PROXY_PORT, ADMIN_PORT], `the NetworkPolicy opens ${PROXY_PORT} (clients) and ${ADMIN_PORT} (Prometheus)`);
  }
  for (const d of docs) {
    if (d !== deployment) t.ok(matches(d.metadata.labels, labels), `${d.kind} carries the app's labels`);
  }
  t.same(env(proxy).get('REDIS_URL')?.valueFrom?.secretKeyRef, { name: 'bitquery-proxy-redis', key: 'url' }, 'REDIS_URL (it holds the password) comes from a Secret');
});

t.test('redis.yaml: the Redis beside the gateway, reachable from the gateway pods only', async (t) => {
  const docs = k8sDocs.filter((d) => d.file === 'redis.yaml').map((d) => d.doc);
  const of = (kind: string) => docs.filter((d) => d.kind === kind);
  const deployment = of('Deployment')[0]!;
  const w = workloads.find((x) => x.doc === deployment)!;
  t.equal(deployment.spec.replicas, 1, 'one Redis');
  t.ok(matches(deployment.spec.selector?.matchLabels, w.podLabels), "the Deployment's selector matches its pods");
  const redis = w.pod.containers[0]!;
  t.match(redis.image, /^redis:\d+(\.\d+)*-alpine$/, 'the official image with a version tag');
  const args = redis.args ?? [];
  const arg = (name: string) => (args.includes(name) ? args[args.indexOf(name) + 1] : undefined);
  t.equal(env(redis).get('REDIS_PASSWORD')?.valueFrom?.secretKeyRef?.name, 'bitquery-proxy-redis', 'the password from the Secret');
  t.equal(arg('--requirepass'), '$(REDIS_PASSWORD)', 'required of every client');
  t.equal(arg('--maxmemory-policy'), 'volatile-lru', 'only keys that expire are evicted (never the usage counters)');
  t.ok(quantity(arg('--maxmemory')!.replace(/mb$/, 'M')) < quantity(redis.resources!.limits!.memory!), 'maxmemory is below the memory limit');
  const own = redis.securityContext ?? {};
  t.equal(w.pod.securityContext?.runAsNonRoot, true, 'runAsNonRoot');
  t.equal(own.readOnlyRootFilesystem, true, 'readOnlyRootFilesystem');
  t.equal(own.allowPrivilegeEscalation, false, 'no privilege escalation');
  t.ok(own.capabilities?.drop?.includes('ALL'), 'all capabilities dropped');

  const service = of('Service')[0]!;
  t.equal(service.metadata.name, 'bitquery-proxy-redis', 'the host name in the documented REDIS_URL');
  t.ok(matches(service.spec.selector, w.podLabels), "the Service's selector matches the Redis pod");
  t.equal(service.spec.ports?.[0]?.port, 6379);
  const gatewayPods = workloads.find((x) => x.file === 'gateway.yaml')!.podLabels;
  const policy = of('NetworkPolicy')[0]!;
  t.ok(matches(policy.spec.podSelector?.matchLabels, w.podLabels), 'the NetworkPolicy selects the Redis pod');
  const from = policy.spec.ingress.flatMap((rule: { from: { podSelector?: { matchLabels: Labels }; namespaceSelector?: unknown }[] }) => rule.from);
  t.ok(from.length > 0 && from.every((f: { podSelector?: { matchLabels: Labels }; namespaceSelector?: unknown }) => !f.namespaceSelector && matches(f.podSelector?.matchLabels, gatewayPods)), 'only the gateway pods may connect');
  t.notOk(matches(w.podLabels, gatewayPods), 'the Redis pod is not selected as a gateway pod');
});

// ---- docker compose ------------------------------------------------------------------------------

interface ComposeService {
  build?: string | { context?: string };
  image?: string;
  env_file?: string | (string | { path: string })[];
  environment?: Record<string, string | number | boolean | null> | string[];
  restart?: string;
  healthcheck?: { test?: string | string[] };
  stop_grace_period?: string;
  depends_on?: string[] | Record<string, { condition?: string }>;
  networks?: string[] | Record<string, unknown>;
  ports?: (string | { host_ip?: string })[];
  command?: string | string[];
  profiles?: string[];
  deploy?: { replicas?: number };
  read_only?: boolean;
}
interface Compose {
  services: Record<string, ComposeService>;
  networks?: Record<string, { internal?: boolean } | null>;
}

const composeEnv = (s: ComposeService): Record<string, string> => {
  const raw = s.environment ?? {};
  const pairs = Array.isArray(raw) ? raw.map((kv) => [kv.split('=')[0]!, kv.slice(kv.indexOf('=') + 1)]) : Object.entries(raw);
  return Object.fromEntries(pairs.map(([k, v]) => [k, String(v ?? '')]));
};
const networksOf = (s: ComposeService) => (Array.isArray(s.networks) ? s.networks : Object.keys(s.networks ?? {}));

/** Milliseconds of a compose duration such as 20s, 1m30s or 1500ms. */
function durationMs(d: string): number {
  const units: Record<string, number> = { h: 3_600_000, m: 60_000, s: 1000, ms: 1, us: 1e-3 };
  const parts = [...String(d).matchAll(/(\d+(?:\.\d+)?)(ms|us|h|m|s)/g)];
  if (parts.map((p) => p[0]).join('') !== String(d)) throw new Error(`cannot read the duration "${d}"`);
  return parts.reduce((sum, p) => sum + Number(p[1]) * units[p[2]!]!, 0);
}

t.test('docker-compose.yml: the proxy and an example client on a private network', async (t) => {
  const docs = readYaml(COMPOSE);
  t.equal(docs.length, 1, 'one document');
  const compose = docs[0] as Compose;
  // The default services; the `gateway` profile is checked below.
  compose.services = Object.fromEntries(Object.entries(compose.services).filter(([, s]) => !s.profiles));
  const proxyEntry = Object.entries(compose.services).find(([, s]) => s.build !== undefined);
  if (!t.ok(proxyEntry, 'a service is built from the Dockerfile')) return;
  const [proxyName, proxy] = proxyEntry!;
  const context = typeof proxy.build === 'string' ? proxy.build : proxy.build?.context;
  t.equal(context, '.', 'built from the repository root');

  const envFiles = [proxy.env_file ?? []].flat().map((f) => (typeof f === 'string' ? f : f.path));
  t.ok(envFiles.includes('.env'), 'credentials come from .env (env_file)');
  t.equal(proxy.restart, 'unless-stopped', 'restart: unless-stopped');
  const test = [proxy.healthcheck?.test ?? []].flat().join(' ');
  t.match(test, `http://127.0.0.1:${ADMIN_PORT}/healthz`, 'the healthcheck asks /healthz on the admin port');
  t.notMatch(test, /\b(curl|wget)\b/, 'with node, not curl or wget (the image has neither)');

  const environment = composeEnv(proxy);
  for (const name of Object.keys(environment)) t.ok(KNOWN.has(name), `${name} is a setting in SETTINGS`);
  for (const name of CREDENTIALS) t.notOk(name in environment, `${name} is not written in the compose file`);
  t.equal(environment.PORT, String(PROXY_PORT), `PORT=${PROXY_PORT}`);
  t.equal(environment.ADMIN_PORT, String(ADMIN_PORT), `ADMIN_PORT=${ADMIN_PORT}`);
  t.equal(environment.ADMIN_HOST, '0.0.0.0', 'ADMIN_HOST=0.0.0.0, so that the published port reaches it');
  t.ok(
    (proxy.ports ?? []).some((p) => typeof p === 'string' && p === `127.0.0.1:${ADMIN_PORT}:${ADMIN_PORT}`),
    `the admin port is published on the host's loopback (127.0.0.1:${ADMIN_PORT})`,
  );
  if (!LOOPBACK.test(environment.HOST ?? '0.0.0.0')) {
    t.ok(environment.PROXY_ALLOW_UNAUTHENTICATED === 'true' || 'PROXY_API_KEYS_FILE' in environment, 'a non-loopback listener says how it is protected');
  }
  const drain = Number(environment.SHUTDOWN_TIMEOUT_MS ?? settingDefault('SHUTDOWN_TIMEOUT_MS'));
  if (t.ok(proxy.stop_grace_period, 'stop_grace_period is set (Docker would kill after 10 s)')) {
    t.ok(durationMs(proxy.stop_grace_period!) > drain, `stop_grace_period ${proxy.stop_grace_period} > SHUTDOWN_TIMEOUT_MS ${drain} ms`);
  }
  for (const p of proxy.ports ?? []) {
    const hostIp = typeof p === 'string' ? p.split(':').length === 3 && p.split(':')[0] : p.host_ip;
    t.equal(hostIp, '127.0.0.1', `published port ${JSON.stringify(p)} is on the host's loopback only`);
  }
  t.doesNotThrow(() => loadWith(environment, ENV_EXAMPLE), 'loadConfig accepts the compose settings with .env.example');

  const clients = Object.entries(compose.services).filter(([name]) => name !== proxyName);
  t.ok(clients.length >= 1, 'an example client');
  for (const [name, client] of clients) {
    const dependsOn = client.depends_on;
    const condition = Array.isArray(dependsOn) ? undefined : dependsOn?.[proxyName]?.condition;
    t.equal(condition, 'service_healthy', `${name} waits for the proxy's healthcheck`);
    t.match([client.command ?? []].flat().join(' '), `http://${proxyName}:${PROXY_PORT}/graphql`, `${name} calls the proxy by its service name`);
    const shared = networksOf(client).filter((n) => networksOf(proxy).includes(n));
    t.ok(shared.length > 0, `${name} shares a network with the proxy`);
    t.ok(shared.every((n) => compose.networks?.[n]?.internal === true), 'that network is private (internal: true)');
  }
});

t.test('docker-compose.yml, profile gateway: two replicas sharing one Redis on an internal network', async (t) => {
  const compose = readYaml(COMPOSE)[0] as Compose;
  const inProfile = Object.entries(compose.services).filter(([, s]) => s.profiles?.includes('gateway'));
  t.same(inProfile.map(([name]) => name).sort(), ['gateway', 'redis'], 'the replicas and Redis');
  const gateway = compose.services.gateway!;
  const redis = compose.services.redis!;
  t.ok(gateway.build !== undefined && (gateway.deploy?.replicas ?? 1) >= 2, 'two replicas or more of the proxy built here');
  const environment = composeEnv(gateway);
  for (const name of Object.keys(environment)) t.ok(KNOWN.has(name), `${name} is a setting in SETTINGS`);
  const url = new URL(environment.REDIS_URL ?? '');
  t.same([url.protocol, url.hostname, url.password], ['redis:', 'redis', ''], 'REDIS_URL names the redis service and holds no password');
  for (const name of CREDENTIALS) if (name !== 'REDIS_URL') t.notOk(name in environment, `${name} is not written in the compose file`);
  t.doesNotThrow(() => loadWith(environment, ENV_EXAMPLE), 'loadConfig accepts the gateway settings with .env.example');
  const dependsOn = gateway.depends_on as Record<string, { condition?: string }>;
  t.equal(dependsOn.redis?.condition, 'service_healthy', 'the replicas wait for Redis');
  t.match([redis.image ?? ''].flat().join(''), /^redis:\d+(\.\d+)*-alpine$/, 'the official Redis image with a version tag');
  const command = [redis.command ?? []].flat();
  t.equal(command[command.indexOf('--maxmemory-policy') + 1], 'volatile-lru', 'only keys that expire are evicted');
  t.ok(command.includes('--maxmemory'), 'memory is bounded');
  t.same(networksOf(redis), ['shared-state'], 'Redis is on one network');
  t.equal(compose.networks?.['shared-state']?.internal, true, 'an internal one');
  const onIt = Object.entries(compose.services).filter(([, s]) => networksOf(s).includes('shared-state')).map(([name]) => name).sort();
  t.same(onIt, ['gateway', 'redis'], 'which only the replicas join');
  t.equal(redis.read_only, true, 'read-only root filesystem');
  const drain = Number(environment.SHUTDOWN_TIMEOUT_MS ?? settingDefault('SHUTDOWN_TIMEOUT_MS'));
  t.ok(durationMs(gateway.stop_grace_period ?? '10s') > drain, 'stop_grace_period covers the drain');
});

t.test('.env.example: placeholders for real settings, one credentials mode', async (t) => {
  const text = readFileSync(ENV_EXAMPLE, 'utf8');
  const names = [...text.matchAll(/^#?\s*([A-Z][A-Z0-9_]*)=/gm)].map((m) => m[1]!);
  for (const name of names) t.ok(KNOWN.has(name), `${name} is a setting in SETTINGS`);
  for (const name of ['BITQUERY_CLIENT_ID', 'BITQUERY_CLIENT_SECRET', 'BITQUERY_TOKEN']) t.ok(names.includes(name), `${name} is listed`);
  t.doesNotThrow(() => loadConfig({}, { dotenvPath: ENV_EXAMPLE }), 'copied to .env unchanged, it is a valid configuration');
  const ignored = readFileSync(join(ROOT, '.gitignore'), 'utf8').split('\n').map((l) => l.trim());
  t.ok(ignored.includes('.env'), '.env is ignored by git');
});
