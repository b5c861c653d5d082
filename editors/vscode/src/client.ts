/**
 * The Parafill server's lifecycle in VS Code: resolve and check the command, start the language
 * client, restart it with back-off when it crashes, and poll `parafill/status` for the status bar.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as vscode from 'vscode';
import {
  CloseAction,
  ErrorAction,
  ExecuteCommandRequest,
  LanguageClient,
  RevealOutputChannelOn,
  State,
  type LanguageClientOptions,
  type ServerOptions,
} from 'vscode-languageclient/node';
import { checkPython, resolveServerCommand, ServerCommandError, which, type ServerCommand } from './command';
import { restartDelayMs, statusView, type ServerStatus } from './policy';
import { clientSettings, documentSelector, initializationOptions, SECTION } from './settings';

export const STATUS_REQUEST = 'parafill/status';
export const FILL_COMMAND = 'parafill.fill';
const STATUS_POLL_MS = 2000;

function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

function get(key: string): unknown {
  return vscode.workspace.getConfiguration(SECTION).get(key);
}

/** The server command from the settings; throws ServerCommandError with a message for the user. */
export function serverCommand(): ServerCommand {
  const settings = clientSettings(get);
  const resolved = resolveServerCommand(settings, (cmd) => which(cmd, process.env, isExecutable));
  if (resolved.python) {
    checkPython(resolved.command, (cmd, args) => {
      const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 30000 });
      return { status: r.error ? null : r.status, stderr: r.stderr ?? String(r.error ?? '') };
    });
  }
  return resolved;
}

export class ParafillServer implements vscode.Disposable {
  private client: LanguageClient | undefined;
  private crashes: number[] = [];
  private restartTimer: NodeJS.Timeout | undefined;
  private readonly poller: NodeJS.Timeout;
  private lastStatus: ServerStatus = { state: 'stopped' };

  constructor(
    private readonly output: vscode.LogOutputChannel,
    private readonly statusItem: vscode.StatusBarItem,
  ) {
    this.poller = setInterval(() => void this.poll(), STATUS_POLL_MS);
  }

  /** Starts (or restarts) the server; shows an error message instead of throwing. */
  async start(): Promise<void> {
    await this.stop();
    let command: ServerCommand;
    try {
      command = serverCommand();
    } catch (e) {
      this.show({ state: 'error', error: String((e as Error).message) });
      const message = e instanceof ServerCommandError ? e.message : `Parafill: ${e}`;
      this.output.appendLine(message);
      void vscode.window.showErrorMessage(message, 'Open Settings').then((choice) => {
        if (choice) void vscode.commands.executeCommand('workbench.action.openSettings', SECTION);
      });
      return;
    }
    this.output.appendLine(`Starting ${command.command} ${command.args.join(' ')}`);
    const serverOptions: ServerOptions = { command: command.command, args: command.args };
    const languages = clientSettings(get).languages;
    const clientOptions: LanguageClientOptions = {
      documentSelector: documentSelector(languages),
      initializationOptions: initializationOptions(get),
      synchronize: { configurationSection: SECTION },
      outputChannel: this.output,
      revealOutputChannelOn: RevealOutputChannelOn.Never,
      errorHandler: {
        error: () => ({ action: ErrorAction.Continue }),
        closed: () => {
          this.onCrash();
          return { action: CloseAction.DoNotRestart, handled: true };
        },
      },
    };
    const client = new LanguageClient('parafill', 'Parafill', serverOptions, clientOptions);
    this.client = client;
    this.show({ state: 'starting' });
    try {
      await client.start();
    } catch (e) {
      this.output.appendLine(`Parafill server failed to start: ${e}`);
      if (this.client === client) this.show({ state: 'error', error: String(e) });
      return;
    }
    void this.poll();
  }

  async stop(): Promise<void> {
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.restartTimer = undefined;
    const client = this.client;
    this.client = undefined;
    if (client && client.state !== State.Stopped) {
      try {
        await client.stop(5000);
      } catch (e) {
        this.output.appendLine(`Parafill: stopping the server: ${e}`);
      }
    }
    this.show({ state: 'stopped' });
  }

  /** The crash policy: restart with back-off, then give up with a message that offers the log. */
  private onCrash(): void {
    const now = Date.now();
    const delay = restartDelayMs(this.crashes, now);
    this.crashes.push(now);
    if (delay === undefined) {
      this.show({ state: 'error', error: 'the server crashed repeatedly' });
      const logFile = String(get('logFile') ?? '');
      const actions = logFile ? ['Show Log', 'Open Log File', 'Restart'] : ['Show Log', 'Restart'];
      void vscode.window
        .showErrorMessage(
          `Parafill: the server crashed ${this.crashes.length} times and stays stopped. See the log for the cause.`,
          ...actions,
        )
        .then((choice) => {
          if (choice === 'Show Log') this.output.show();
          if (choice === 'Open Log File') void vscode.window.showTextDocument(vscode.Uri.file(logFile));
          if (choice === 'Restart') void this.restart();
        });
      return;
    }
    this.output.appendLine(`Parafill server exited; restarting in ${delay} ms`);
    this.show({ state: 'starting' });
    this.restartTimer = setTimeout(() => void this.start(), delay);
  }

  /** Restart on request: forget earlier crashes. */
  async restart(): Promise<void> {
    this.crashes = [];
    await this.start();
  }

  async status(): Promise<ServerStatus> {
    const client = this.client;
    if (!client || client.state !== State.Running) return this.lastStatus;
    try {
      return (await client.sendRequest(STATUS_REQUEST, {})) as ServerStatus;
    } catch (e) {
      return { state: 'error', error: String(e) };
    }
  }

  /** Fills a range of a document, or every `<|fill|>` marker when range is omitted. */
  async fill(document: vscode.TextDocument, range?: vscode.Range): Promise<void> {
    const client = this.client;
    if (!client || client.state !== State.Running) {
      void vscode.window.showWarningMessage('Parafill: the server is not running.');
      return;
    }
    const args: Record<string, unknown> = { uri: client.code2ProtocolConverter.asUri(document.uri) };
    if (range) args.range = client.code2ProtocolConverter.asRange(range);
    await client.sendRequest(ExecuteCommandRequest.type, { command: FILL_COMMAND, arguments: [args] });
  }

  private async poll(): Promise<void> {
    if (this.client?.state === State.Running) this.show(await this.status());
  }

  private show(status: ServerStatus): void {
    this.lastStatus = status;
    const view = statusView(status);
    this.statusItem.text = view.text;
    this.statusItem.tooltip = view.tooltip;
    this.statusItem.backgroundColor = view.isError
      ? new vscode.ThemeColor('statusBarItem.errorBackground')
      : undefined;
    this.statusItem.show();
  }

  dispose(): void {
    clearInterval(this.poller);
    void this.stop();
  }
}
