// Drives VS Code (code-server) in Debian's Chromium with playwright-core for
// tests/e2e/test_vscode.py: open a file, wait for the Parafill server, type at a cursor, wait for
// the ghost text, screenshot it, accept its next word (VS Code's Ctrl+Right) or, with
// "partial": "line", its next line (VS Code's acceptNextLine, on LINE_KEY), then the rest with
// Tab (if any is left), and save, reading the server's counters ("Parafill: Show Status", on STATUS_KEY so the
// editor keeps the focus and the suggestion) before and after each; then "Parafill: Show
// Denoising". Prints one JSON line with what it saw.
// Usage: node drive.cjs '{"scenario": "ghost"|"error", "playwright": DIR, "url": URL, "file": NAME, "line": N, "column": N,
//                         "typed": TEXT, "screenshot": PNG, "readyMs": N, "ghostMs": N,
//                         "partial": "word"|"line"}'
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

// Keys the test's keybindings.json binds (tests/e2e/test_vscode.py): a command run from the
// palette would take the focus from the editor and hide the suggestion.
const STATUS_KEY = 'Control+Alt+Shift+S'; // parafill.showStatus
const CLEAR_KEY = 'Control+Alt+Shift+C'; // notifications.clearAll
const LINE_KEY = 'Control+Alt+Shift+L'; // editor.action.inlineSuggest.acceptNextLine (no default key)

/** The server's counters, read from the "Parafill: Show Status" notification. */
async function serverCounters(page) {
  await page.keyboard.press(CLEAR_KEY);
  await page.waitForTimeout(200);
  await page.keyboard.press(STATUS_KEY);
  const handle = await page.waitForFunction(
    () => {
      for (const el of document.querySelectorAll('.notification-list-item-message')) {
        const text = el.textContent || '';
        if (/requests \d+/.test(text)) return text;
      }
      return '';
    },
    null,
    { timeout: 15000 },
  );
  const text = await handle.jsonValue();
  await page.keyboard.press(CLEAR_KEY);
  const num = (re) => {
    const m = re.exec(text);
    return m ? Number(m[1]) : null;
  };
  return {
    text,
    requests: num(/requests (\d+)/),
    completed: num(/completed (\d+)/),
    typedThrough: num(/typed through (\d+)/),
    shown: num(/suggestions shown (\d+)/),
    accepted: num(/accepted (\d+), in part/),
    partial: num(/in part (\d+)/),
    dismissed: num(/dismissed (\d+)/),
  };
}

/** Text of the editor line starting with `prefix`, without ghost text (non-breaking spaces as
 * spaces), or null. */
async function lineText(page, prefix) {
  return page.evaluate((prefix) => {
    for (const el of document.querySelectorAll('.part.editor .monaco-editor .view-line')) {
      const copy = el.cloneNode(true);
      copy.querySelectorAll('[class*="ghost-text"]').forEach((g) => g.remove());
      const text = (copy.textContent || '').replace(/\u00a0/g, ' ');
      if (text.startsWith(prefix)) return text;
    }
    return null;
  }, prefix);
}

/** The lines of the active editor, in order (non-breaking spaces as spaces). */
async function activeEditorText(page) {
  return page.evaluate(() => {
    const group = document.querySelector('.part.editor .editor-group-container.active') || document;
    const lines = [...group.querySelectorAll('.monaco-editor .view-line')];
    lines.sort((a, b) => parseFloat(a.style.top) - parseFloat(b.style.top));
    return lines.map((el) => (el.textContent || '').replace(/\u00a0/g, ' ')).join('\n');
  });
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

  // Accept the next word (Ctrl+Right) or line (LINE_KEY) with VS Code's own command: the rest
  // stays suggested, without a model run (the server's counters).
  const prefix = ' '.repeat(opts.column - 1) + opts.typed;
  const partial = opts.partial || 'word';
  result.countersShown = await serverCounters(page);
  await page.keyboard.press(partial === 'line' ? LINE_KEY : 'Control+ArrowRight');
  await page.waitForFunction(
    (prefix) => {
      for (const el of document.querySelectorAll('.part.editor .monaco-editor .view-line')) {
        const copy = el.cloneNode(true);
        copy.querySelectorAll('[class*="ghost-text"]').forEach((g) => g.remove());
        const text = (copy.textContent || '').replace(/\u00a0/g, ' ');
        if (text.startsWith(prefix) && text.length > prefix.length) return true;
      }
      return false;
    },
    prefix,
    { timeout: 10000 },
  );
  await page.waitForTimeout(1000); // VS Code may ask again: the server answers from typing-through
  result.lineAfterPart = await lineText(page, prefix);
  result.ghostAfterPart = (await ghost.allTextContents()).join('');
  log(`after accept-next-${partial}: ${JSON.stringify(result.lineAfterPart)} + ghost ${JSON.stringify(result.ghostAfterPart)}`);
  result.countersAfterPart = await serverCounters(page);

  if (result.ghostAfterPart) {
    await page.keyboard.press('Tab');
    await page.waitForTimeout(300);
  }
  result.lineAccepted = await lineText(page, prefix);
  const until = Date.now() + 15000;
  do {
    result.countersAccepted = await serverCounters(page);
  } while (result.countersAccepted.accepted <= result.countersShown.accepted && Date.now() < until);
  log(`counters: ${JSON.stringify([result.countersShown, result.countersAfterPart, result.countersAccepted])}`);
  await save(page);
  result.status = await statusText(page);

  // "Parafill: Show Denoising": the last suggestion's steps in a read-only document.
  await runCommand(page, 'Parafill: Show Denoising');
  await page.waitForFunction(() => document.title.includes('(denoising)'), null, { timeout: 20000 });
  await page.waitForTimeout(500);
  result.denoising = await activeEditorText(page);
  log(`denoising:\n${result.denoising}`);
  await page.keyboard.press('Control+W');
  await page.waitForTimeout(300);
}

main().catch((e) => {
  process.stdout.write(JSON.stringify({ ok: false, error: String(e) }) + '\n');
  process.exit(1);
});
