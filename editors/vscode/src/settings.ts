/**
 * Settings: the `parafill` configuration section and what of it the server receives.
 * Pure (no `vscode` import) so the unit tests run under plain Node.
 */

/** The configuration section; the server gets it in initializationOptions and on change. */
export const SECTION = 'parafill';

/** Keys the server reads (mirrors lsp_server/config.py); the rest are client-only. */
export const SERVER_KEYS = [
  'enabled',
  'modelPath',
  'device',
  'precision',
  'modelFamily',
  'passCache',
  'schedule',
  'steps',
  'threshold',
  'lineBudget',
  'blockBudget',
  'contextTokens',
  'candidates',
  'debounceMs',
  'multilineDeadlineMs',
  'explicitDeadlineMs',
  'prefetch',
  'lengthEstimate',
  'languages',
  'cacheSize',
  'threads',
  'contextReuse',
  'repoContext',
  'repoContextShare',
  'logFile',
  'backend',
  'remote.url',
  'remote.api',
  'remote.model',
  'remote.apiKeyEnv',
  'remote.timeoutMs',
] as const;

/** The server's default: its tree-sitter languages, and `*` for any other language. */
export const DEFAULT_LANGUAGES = ['python', 'javascript', 'typescript', 'tsx', 'go', 'rust', '*'];

/** VS Code language ids that a server language id also covers. */
const LANGUAGE_ALIASES: Record<string, string[]> = {
  tsx: ['typescriptreact'],
  javascript: ['javascriptreact'],
};

/** Document selector for the client: the languages (with aliases), or every document for `*`. */
export function documentSelector(languages: string[]): { scheme: string; language?: string }[] {
  const schemes = ['file', 'untitled'];
  if (languages.includes('*')) return schemes.map((scheme) => ({ scheme }));
  const ids = [...new Set(languages.flatMap((l) => [l, ...(LANGUAGE_ALIASES[l] ?? [])]))];
  return ids.flatMap((language) => schemes.map((scheme) => ({ scheme, language })));
}

/** Reads one setting below the section, e.g. `get('server.command')`. */
export type Getter = (key: string) => unknown;

/** Client-side settings: how to start the server and for which documents. */
export interface ClientSettings {
  command: string[];
  pythonPath: string;
  languages: string[];
}

export function clientSettings(get: Getter): ClientSettings {
  const command = get('server.command');
  const languages = get('languages');
  return {
    command: Array.isArray(command) ? command.map(String).filter((s) => s.length > 0) : [],
    pythonPath: String(get('server.pythonPath') ?? '').trim(),
    languages: Array.isArray(languages) && languages.length > 0 ? languages.map(String) : DEFAULT_LANGUAGES,
  };
}

/**
 * The server's settings object: every server key that is set. Unset values (undefined, null,
 * empty strings) are left out so the server applies its own defaults.
 */
export function serverSettings(get: Getter): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const key of SERVER_KEYS) {
    const value = get(key);
    if (value === undefined || value === null || value === '') continue;
    out[key] = value;
  }
  return out;
}

/** initializationOptions: the settings under the section name, as the server expects. */
export function initializationOptions(get: Getter): Record<string, unknown> {
  return { [SECTION]: serverSettings(get) };
}
