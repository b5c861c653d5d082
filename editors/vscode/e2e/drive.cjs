// Drives VS Code (code-server) in Debian's Chromium with playwright-core for
// tests/e2e/test_vscode.py: open a file, wait for the Parafill server, type at a cursor, wait for
// the ghost text, screenshot it, accept it with Tab and save. Prints one JSON line with what it saw.
// Usage: node drive.cjs '{"scenario": "ghost"|"error", "playwright": DIR, "url": URL, "file": NAME, "line": N, "column": N,
//                         "typed": TEXT, "screenshot": PNG, "readyMs": N, "ghostMs": N}'
'use strict';
const opts = JSON.parse(process.argv[2]);
const { chromium } = require(opts.playwright);

const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--no-first-run',
  '--disable-sync',
  '--disable-dev-shm-usage',
];

function log(msg) {
  process.stderr.write(`[drive ${new Date().toISOString()}] ${msg}\n`);
}

/** The Parafill status-bar text, or '' while there is none. */
async function statusText(page) {
  return page.evaluate(() => {
    for (const el of document.querySelectorAll('.part.statusbar .statusbar-item')) {
      const text = el.textContent || '';
      if (text.includes('Parafill')) return text.trim();
    }
    return '';
  });
}

async function main() {
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: CHROMIUM_ARGS });
  const result = { ok: false };
  const page = await browser.newPage({ viewport: { width: 1100, height: 640 } });
  try {
    page.on('pageerror', (e) => log(`page error: ${e.message}`));
    await page.goto(opts.url, { waitUntil: 'domcontentloaded' });
    await page.waitForSelector('.monaco-workbench .part.editor', { timeout: 90000 });
    log('workbench loaded');

    await openFile(page, opts.file);

    if (opts.scenario === 'error') {
      // A broken server set-up: the extension must say what is wrong in a notification. Toasts
      // beyond the third are hidden, so the notification centre is opened when the status bar
      // shows the error and the message is not in view.
      const expect = opts.expect || 'Parafill';
      const deadline = Date.now() + opts.readyMs;
      let centreOpened = false;
      while (!result.message) {
        if (Date.now() > deadline) throw new Error(`no notification with "${expect}"`);
        result.message = await page.evaluate((text) => {
          for (const el of document.querySelectorAll('.notification-list-item-message')) {
            if ((el.textContent || '').includes(text)) return el.textContent;
          }
          return '';
        }, expect);
        result.status = await statusText(page);
        if (!result.message && !centreOpened && /error/.test(result.status)) {
          await page.waitForTimeout(2000);
          await runCommand(page, 'Notifications: Show Notifications');
          centreOpened = true;
        }
        await page.waitForTimeout(500);
      }
      await page.screenshot({ path: opts.screenshot });
    } else {
      await ghostScenario(page, result);
      if (opts.holesFile) await fillScenario(page, result);
    }
    result.ok = true;
  } catch (e) {
    result.error = String(e && e.stack ? e.stack : e);
    try {
      await page.screenshot({ path: opts.screenshot.replace(/\.png$/, '-failure.png') });
    } catch {}
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(result.ok ? 0 : 1);
}

/** Opens a workspace file with Quick Open (clicking the editor part first: the chat panel may
 * hold the focus on load). */
async function openFile(page, name) {
  await page.locator('.part.editor').click();
  await page.keyboard.press('Control+P');
  await page.waitForSelector('.quick-input-widget input', { timeout: 20000 });
  await page.keyboard.type(name);
  await page.waitForSelector(`.quick-input-list .monaco-list-row[aria-label*="${name}"]`, { timeout: 20000 });
  await page.keyboard.press('Enter');
  await page.locator('.part.editor .monaco-editor .view-lines').first().waitFor({ timeout: 20000 });
  await page.waitForFunction((n) => document.title.includes(n), name, { timeout: 20000 });
  log(`${name} open`);
}

/** Runs a command from the command palette by its title. */
async function runCommand(page, title) {
  await page.keyboard.press('F1');
  await page.waitForSelector('.quick-input-widget input', { timeout: 10000 });
  await page.keyboard.type(title);
  await page.waitForSelector(`.quick-input-list .monaco-list-row[aria-label*="${title}"]`, { timeout: 10000 });
  await page.keyboard.press('Enter');
}

/** Saves the active editor and waits until it is no longer dirty. */
async function save(page) {
  await page.keyboard.press('Control+S');
  await page.waitForFunction(() => !document.querySelector('.part.editor .tab.active.dirty'), null, { timeout: 10000 });
}

/** Runs "Parafill: Fill Every Hole in File" on a file with <|fill|> markers and saves it. */
async function fillScenario(page, result) {
  await openFile(page, opts.holesFile);
  await page.locator('.part.editor .monaco-editor .view-lines').first().click();
  await runCommand(page, 'Parafill: Fill Every Hole in File');
  await page.waitForFunction(
    () => !document.querySelector('.part.editor .monaco-editor .view-lines').textContent.includes('<|fill|>'),
    null,
    { timeout: opts.ghostMs },
  );
  log('holes filled');
  await save(page);
  result.filled = true;
}

/** Waits for the server, types at the cursor, screenshots the ghost text, accepts it, saves. */
async function ghostScenario(page, result) {
  const editor = page.locator('.part.editor .monaco-editor .view-lines').first();

  // The extension starts the server on the Python file; wait until the model is ready.
  const deadline = Date.now() + opts.readyMs;
  let status = '';
  while (Date.now() < deadline) {
    status = await statusText(page);
    if (status && !/loading|starting|stopped/.test(status)) break;
    await page.waitForTimeout(500);
  }
  result.status = status;
  log(`status bar: ${status}`);
  if (!status || /error|loading|starting|stopped/.test(status)) throw new Error(`Parafill not ready: "${status}"`);

  // Cursor to the line and column, then type.
  await editor.click();
  await page.keyboard.press('Control+G');
  await page.waitForSelector('.quick-input-widget input', { timeout: 10000 });
  await page.keyboard.type(`${opts.line}:${opts.column}`);
  await page.keyboard.press('Enter');
  await page.waitForTimeout(300);
  await page.keyboard.type(opts.typed, { delay: 60 });
  log('typed');

  const ghost = page.locator('.part.editor .ghost-text-decoration, .part.editor .ghost-text-decoration-preview');
  await ghost.first().waitFor({ state: 'visible', timeout: opts.ghostMs });
  await page.waitForTimeout(300); // let multi-line ghost text finish rendering
  result.ghost = (await ghost.allTextContents()).join('');
  log(`ghost text: ${JSON.stringify(result.ghost)}`);
  await page.screenshot({ path: opts.screenshot });

  await page.keyboard.press('Tab');
  await page.waitForTimeout(300);
  await save(page);
  result.status = await statusText(page);
}

main().catch((e) => {
  process.stdout.write(JSON.stringify({ ok: false, error: String(e) }) + '\n');
  process.exit(1);
});
