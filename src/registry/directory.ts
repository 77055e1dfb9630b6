import { GatewayError } from '../errors.js'
import type { RegistryClient } from './client.js'

/** The configured registries by name; callers pick one by name or get the default. */
export class RegistryDirectory {
  private readonly clients: ReadonlyMap<string, RegistryClient>

  constructor (clients: RegistryClient[], readonly defaultName: string) {
    this.clients = new Map(clients.map(client => [client.name, client]))
  }

  get names (): string[] {
    return [...this.clients.keys()]
  }

  get (name: string = this.defaultName): RegistryClient {
    const client = this.clients.get(name)
    if (client === undefined) {
      const shown = name.length > 64 ? `${name.slice(0, 64)}…` : name
      throw new GatewayError('UNKNOWN_REGISTRY', `registry ${JSON.stringify(shown)} is not configured; use one of: ${this.names.join(', ')}.`, {
        extras: { field: 'registry', rule: `must be one of: ${this.names.join(', ')}` }
      })
    }
    return client
  }

  all (): RegistryClient[] {
    return [...this.clients.values()]
  }

  async close (): Promise<void> {
    await Promise.all(this.all().map(async client => await client.close()))
  }
}
