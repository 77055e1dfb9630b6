import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { readFileSync } from 'node:fs'
import t from 'tap'
import { parseAllDocuments } from 'yaml'
import { loadConfig } from '../../src/config/load.js'
import { loadPolicy } from '../../src/policy/load.js'

// No cluster runs here: the sample is checked as data, including that its embedded config and policy load.
const documents = parseAllDocuments(readFileSync(new URL('../../deploy/kubernetes.yaml', import.meta.url), 'utf8')).map(document => document.toJS())
const byKind = (kind: string): any => documents.find(document => document.kind === kind)
const deployment = byKind('Deployment')
const pod = deployment.spec.template.spec
const container = pod.containers[0]
const configMap = byKind('ConfigMap')

t.test('two replicas, rolled one at a time, spread over nodes, with a PodDisruptionBudget keeping one', async t => {
  t.equal(deployment.spec.replicas, 2)
  t.same(deployment.spec.strategy.rollingUpdate, { maxUnavailable: 0, maxSurge: 1 })
  t.same(deployment.spec.selector.matchLabels, deployment.metadata.labels)
  t.match(deployment.spec.template.metadata.labels, deployment.spec.selector.matchLabels, 'the selector picks its pods')
  t.equal(pod.topologySpreadConstraints[0].topologyKey, 'kubernetes.io/hostname')
  const pdb = byKind('PodDisruptionBudget')
  t.equal(pdb.apiVersion, 'policy/v1')
  t.equal(pdb.spec.minAvailable, 1)
  t.same(pdb.spec.selector.matchLabels, deployment.spec.selector.matchLabels, 'the budget covers the same pods')
  t.same(byKind('Service').spec.selector, deployment.spec.selector.matchLabels)
})

t.test('readiness is /readyz (database and registry), liveness /healthz (so an outage restarts nothing)', async t => {
  t.match(container.readinessProbe.httpGet, { path: '/readyz', port: 'http' })
  t.match(container.livenessProbe.httpGet, { path: '/healthz', port: 'http' })
  const http = container.ports.find((port: { name: string }) => port.name === 'http')
  t.equal(http.containerPort, 8080, 'the port the image listens on (Dockerfile PORT)')
  t.match(readFileSync(new URL('../../Dockerfile', import.meta.url), 'utf8'), /PORT=8080/)
})

t.test('secrets come from Secret references, never from the manifest', async t => {
  const env = Object.fromEntries(container.env.map((entry: { name: string, valueFrom?: unknown, value?: unknown }) => [entry.name, entry]))
  t.same(env.DATABASE_URL.valueFrom, { secretKeyRef: { name: 'registry-delete-gateway-db', key: 'url' } })
  t.ok(env.REGISTRY_PASSWORD.valueFrom.secretKeyRef !== undefined)
  t.ok(env.BROWSE_CURSOR_SECRET.valueFrom.secretKeyRef !== undefined, 'one cursor key for every replica')
  t.ok(container.env.every((entry: { value?: unknown }) => entry.value === undefined), 'no literal values')
  t.notMatch(JSON.stringify(documents), /postgres(ql)?:\/\/[^"]*:[^"@]*@/, 'no URL with a password outside the comments')
  t.equal(documents.filter(document => document.kind === 'Secret').length, 0, 'no Secret object with data in the sample')
})

t.test('the embedded config and policy load, with the driver on PostgreSQL and metrics on their own port', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'rdg-k8s-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  writeFileSync(join(dir, 'config.yaml'), configMap.data['config.yaml'])
  const config = loadConfig(['--config', join(dir, 'config.yaml')], { DATABASE_URL: 'postgres://rdg:pw@db/rdg', REGISTRY_USERNAME: 'u', REGISTRY_PASSWORD: 'p' })
  t.equal(config.audit.driver, 'postgres')
  t.equal(config.audit.url, 'postgres://rdg:pw@db/rdg', 'from DATABASE_URL')
  t.equal(config.policyFile, '/etc/rdg/policy.yaml')
  t.ok(config.trustProxy.length > 0, 'behind an ingress: its hops are listed')
  t.ok(container.volumeMounts.some((mount: { mountPath: string }) => mount.mountPath === '/etc/rdg'), 'mounted where the config says')
  t.equal(config.metrics.port, container.ports.find((port: { name: string }) => port.name === 'metrics').containerPort)
  t.ok(pod.terminationGracePeriodSeconds * 1000 > config.shutdownTimeoutMs + 5000, 'the grace period covers the preStop pause and the drain')
  t.same(container.args, ['serve', '--config', '/etc/rdg/config.yaml'])
  loadPolicy(configMap.data['policy.yaml'], 'the sample policy')
  t.pass('the sample policy loads')
})

t.test('locked down: non-root, read-only root, no privilege escalation, all capabilities dropped', async t => {
  t.equal(pod.securityContext.runAsNonRoot, true)
  t.match(container.securityContext, { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } })
})
