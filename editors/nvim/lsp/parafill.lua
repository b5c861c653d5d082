--- The Parafill language server, as a `vim.lsp.Config` for `vim.lsp.enable('parafill')`.
--- `require('parafill').setup()` overrides `cmd`, `filetypes` and the settings from its options.
---@type vim.lsp.Config
return {
  cmd = { 'parafill', 'serve' },
  filetypes = { 'python', 'javascript', 'typescript', 'typescriptreact', 'go', 'rust' },
  root_markers = { 'pyproject.toml', 'package.json', 'go.mod', 'Cargo.toml', '.git' },
  init_options = { parafill = {} },
  settings = { parafill = {} },
}
