/** Parafill for VS Code: starts the server, registers the commands and the status-bar item. */
import * as vscode from 'vscode';
import { ParafillServer } from './client';

let server: ParafillServer | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const output = vscode.window.createOutputChannel('Parafill', { log: true });
  const statusItem = vscode.window.createStatusBarItem('parafill.status', vscode.StatusBarAlignment.Right, 100);
  statusItem.name = 'Parafill';
  statusItem.command = 'parafill.showStatus';
  server = new ParafillServer(output, statusItem);
  const srv = server;

  context.subscriptions.push(
    output,
    statusItem,
    srv,
    vscode.commands.registerCommand('parafill.fillSelection', async () => {
      const editor = vscode.window.activeTextEditor;
      if (!editor || editor.selection.isEmpty) {
        void vscode.window.showInformationMessage('Parafill: select the code to fill first.');
        return;
      }
      await srv.fill(editor.document, editor.selection);
    }),
    vscode.commands.registerCommand('parafill.fillAll', async () => {
      const editor = vscode.window.activeTextEditor;
      if (editor) await srv.fill(editor.document);
    }),
    vscode.commands.registerCommand('parafill.restart', () => srv.restart()),
    vscode.commands.registerCommand('parafill.showStatus', async () => {
      const status = await srv.status();
      const lines = Object.entries(status).map(([k, v]) => `${k}: ${JSON.stringify(v)}`);
      const choice = await vscode.window.showInformationMessage(
        `Parafill — ${lines.join(', ')}`,
        'Show Log',
        'Restart',
      );
      if (choice === 'Show Log') output.show();
      if (choice === 'Restart') await srv.restart();
    }),
    vscode.workspace.onDidChangeConfiguration((e) => {
      if (e.affectsConfiguration('parafill.server') || e.affectsConfiguration('parafill.languages')) {
        void srv.restart();
      }
    }),
  );
  await srv.start();
}

export async function deactivate(): Promise<void> {
  await server?.stop();
}
