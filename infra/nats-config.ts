import { readFile } from 'node:fs/promises';

/** The reference configs in infra/nats/, read as templates by the launcher. */
export const CONFIG_TEMPLATES = {
  single: new URL('./nats/single.conf', import.meta.url),
  clusterNode: new URL('./nats/cluster-node.conf', import.meta.url),
} as const;

export type ConfigTemplate = keyof typeof CONFIG_TEMPLATES;

/**
 * Reads a template from infra/nats/ and replaces every `{{NAME}}` with `values[NAME]`.
 * Throws if the template uses a placeholder without a value, so template and launcher cannot
 * drift apart silently. Values are inserted verbatim; callers quote or validate them.
 */
export async function renderConfig(
  template: ConfigTemplate,
  values: Readonly<Record<string, string>>,
): Promise<string> {
  const text = await readFile(CONFIG_TEMPLATES[template], 'utf8');
  return text.replace(/\{\{([A-Z_]+)\}\}/g, (placeholder, name: string) => {
    const value = values[name];
    if (value === undefined) {
      throw new Error(`infra/nats/${template} config: placeholder ${placeholder} has no value`);
    }
    return value;
  });
}

/** Escapes a string for use inside a double-quoted nats-server config string. */
export function configString(value: string): string {
  return JSON.stringify(value).slice(1, -1);
}
