import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { clientSettings, DEFAULT_LANGUAGES, documentSelector, initializationOptions, SERVER_KEYS, serverSettings } from '../src/settings';

const getter = (values: Record<string, unknown>) => (key: string) => values[key];

test('server settings keep the set server keys and drop client-only and empty ones', () => {
  const get = getter({
    modelPath: '/models/x',
    device: 'cpu',
    steps: null,
    threshold: 0.8,
    lineBudget: 32,
    logFile: '',
    'server.command': ['parafill', 'serve'],
    'trace.server': 'verbose',
  });
  assert.deepEqual(serverSettings(get), { modelPath: '/models/x', device: 'cpu', threshold: 0.8, lineBudget: 32 });
});

test('initializationOptions nest the settings under the parafill section', () => {
  assert.deepEqual(initializationOptions(getter({ debounceMs: 10 })), { parafill: { debounceMs: 10 } });
});

test('every server key is declared in package.json with a description', async () => {
  const pkg = JSON.parse(require('node:fs').readFileSync(`${__dirname}/../../package.json`, 'utf8'));
  const props = pkg.contributes.configuration.properties;
  for (const key of SERVER_KEYS) {
    assert.ok(props[`parafill.${key}`], `parafill.${key} missing from package.json`);
    assert.ok(props[`parafill.${key}`].description || props[`parafill.${key}`].markdownDescription);
  }
});

test('client settings: defaults and cleaning', () => {
  assert.deepEqual(clientSettings(getter({})), { command: [], pythonPath: '', languages: DEFAULT_LANGUAGES });
  assert.deepEqual(
    clientSettings(getter({ 'server.command': ['/x/parafill', '', 'serve'], 'server.pythonPath': ' py ', languages: ['go'] })),
    { command: ['/x/parafill', 'serve'], pythonPath: 'py', languages: ['go'] },
  );
});

test('document selector: aliases, and every document for *', () => {
  assert.deepEqual(
    documentSelector(['python', 'tsx']).map((s) => `${s.scheme}:${s.language}`),
    ['file:python', 'untitled:python', 'file:tsx', 'untitled:tsx', 'file:typescriptreact', 'untitled:typescriptreact'],
  );
  assert.deepEqual(documentSelector(['python', '*']), [{ scheme: 'file' }, { scheme: 'untitled' }]);
});

test('package.json defaults mirror the server defaults in lsp_server/config.py', () => {
  const fs = require('node:fs');
  const pkg = JSON.parse(fs.readFileSync(`${__dirname}/../../package.json`, 'utf8'));
  const props = pkg.contributes.configuration.properties;
  const source = fs.readFileSync(`${__dirname}/../../../../lsp_server/config.py`, 'utf8');
  const config = source.slice(source.indexOf('class Settings'), source.indexOf('\n    def ', source.indexOf('class Settings')));
  const defaults: Record<string, string> = {};
  for (const m of config.matchAll(/^    (\w+): [^=\n]+= ([^#\n]+?)\s*(#.*)?$/gm)) defaults[m[1]] = m[2];
  assert.ok(Object.keys(defaults).length >= 10, 'could not read the Settings defaults');
  // remote_api_key_env -> remote.apiKeyEnv (the remote group), others camelCase
  const camel = (s: string) =>
    s
      .replace(/_(\w)/g, (_: string, c: string) => c.toUpperCase())
      .replace(/^remote(\w)/, (_: string, c: string) => `remote.${c.toLowerCase()}`);
  for (const [name, raw] of Object.entries(defaults)) {
    const key = camel(name);
    assert.ok((SERVER_KEYS as readonly string[]).includes(key), `server setting ${key} missing from SERVER_KEYS`);
    const d = props[`parafill.${key}`].default;
    if (raw === 'None') assert.equal(d, null, key);
    else if (/^-?[\d.]+$/.test(raw)) assert.equal(d, Number(raw), key);
    else if (raw === 'True' || raw === 'False') assert.equal(d, raw === 'True', key);
    else if (raw.startsWith('"')) assert.equal(d, JSON.parse(raw), key);
  }
  assert.deepEqual(props['parafill.languages'].default, DEFAULT_LANGUAGES);
  // The keys the server parses (its FIELDS table) are exactly the keys the client sends.
  const table = source.slice(source.indexOf('FIELDS = {'), source.indexOf('\n}\n', source.indexOf('FIELDS = {')));
  const serverKeys = [...table.matchAll(/^    "([\w.]+)": \(/gm)].map((m) => m[1]);
  assert.deepEqual([...serverKeys].sort(), [...SERVER_KEYS].sort());
});
