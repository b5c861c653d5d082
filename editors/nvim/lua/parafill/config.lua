--- Parafill options: annotated defaults, merged with the user's options by `setup()`.
local M = {}

---@class parafill.Config
M.defaults = {
  --- Command that starts the language server (stdio).
  ---@type string[]
  cmd = { 'parafill', 'serve' },
  --- Filetypes the client attaches to.
  ---@type string[]
  filetypes = { 'python', 'javascript', 'typescript', 'typescriptreact', 'go', 'rust' },
  --- Markers of a project root; the file's directory when none is found.
  ---@type string[]
  root_markers = { 'pyproject.toml', 'package.json', 'go.mod', 'Cargo.toml', '.git' },
  --- Server settings, sent as initializationOptions and workspace/didChangeConfiguration under
  --- `parafill` (camelCase, as in lsp_server/config.py). Unset keys take the server's defaults:
  --- enabled = true, modelPath = nil (the shipped model), device = 'auto' ('cpu' | 'cuda'),
  --- precision = 'auto' ('int8' | 'fp32'), contextReuse = true,
  --- schedule = 'threshold' ('fixed' | 'ltr'), steps = nil, threshold = nil, lineBudget = 24,
  --- blockBudget = 96, contextTokens = 400, candidates = 3, debounceMs = 25,
  --- multilineDeadlineMs = 300, explicitDeadlineMs = 3000, prefetch = true, lengthEstimate = true,
  --- languages = { 'python', 'javascript', 'typescript', 'tsx', 'go', 'rust', '*' },
  --- cacheSize = 256, threads = 0 (automatic), logFile = nil.
  ---@type table<string, any>
  settings = {},
  inline = {
    --- Show ghost text while typing (Neovim 0.12+: vim.lsp.inline_completion; older: virtual text).
    enabled = true,
    --- 'auto': native on 0.12+, virtual text before; 'virtual_text': always the fallback.
    ---@type 'auto'|'virtual_text'
    backend = 'auto',
    --- Insert-mode key that accepts the ghost text; falls back to the key itself when none shows.
    ---@type string|false
    accept_key = '<Tab>',
    --- Insert-mode keys that accept the next word / the next line of the ghost text (the rest
    --- stays shown; taking all that is left is a full accept).
    ---@type string|false
    accept_word_key = '<M-Right>',
    ---@type string|false
    accept_line_key = '<M-C-Right>',
    --- Insert-mode keys that cycle through candidates (0.12+).
    ---@type string|false
    next_key = '<M-]>',
    ---@type string|false
    prev_key = '<M-[>',
    --- Virtual-text fallback (0.10/0.11): wait this long after typing before asking (ms).
    debounce_ms = 150,
  },
  --- Neovim 0.11+: also offer the completions in the popup menu (vim.lsp.completion).
  completion = true,
}

---@type parafill.Config
M.options = vim.deepcopy(M.defaults)

--- Merges `opts` over the defaults and stores the result in `M.options`.
---@param opts? table
---@return parafill.Config
function M.setup(opts)
  M.options = vim.tbl_deep_extend('force', vim.deepcopy(M.defaults), opts or {})
  return M.options
end

return M
