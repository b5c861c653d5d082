--- Starts the Parafill language client and wires ghost text, completion and keys on attach.
local config = require('parafill.config')

local M = {}

M.name = 'parafill'

--- The running Parafill client of a buffer (0: current), if any.
---@param bufnr? integer
---@return vim.lsp.Client?
function M.get(bufnr)
  return vim.lsp.get_clients({ name = M.name, bufnr = bufnr or vim.api.nvim_get_current_buf() })[1]
end

--- Whether this Neovim has the native inline completion (0.12+).
---@return boolean
function M.native_inline()
  local o = config.options.inline
  if o.backend == 'virtual_text' then
    return false
  end
  return vim.lsp.inline_completion ~= nil
end

--- Sends a request with the calling convention of this Neovim version.
---@param client vim.lsp.Client
---@param method string
---@param params table
---@param handler fun(err: table?, result: any)
---@param bufnr integer
function M.request(client, method, params, handler, bufnr)
  if vim.fn.has('nvim-0.11') == 1 then
    return client:request(method, params, handler, bufnr)
  end
  return client.request(method, params, handler, bufnr)
end

--- The `vim.lsp.Config` of lsp/parafill.lua with the user's options applied.
---@return vim.lsp.Config
local function overrides()
  local o = config.options
  return {
    cmd = o.cmd,
    filetypes = o.filetypes,
    root_markers = o.root_markers,
    init_options = { parafill = o.settings },
    settings = { parafill = o.settings },
  }
end

---@param bufnr integer
---@param client vim.lsp.Client
local function on_attach(bufnr, client)
  local o = config.options
  if o.inline.enabled then
    if M.native_inline() then
      vim.lsp.inline_completion.enable(true, { bufnr = bufnr })
      require('parafill.keys').map_native(bufnr, o.inline)
    else
      require('parafill.ghost').attach(bufnr, client, o.inline)
    end
  end
  if o.completion and vim.lsp.completion then
    vim.lsp.completion.enable(true, client.id, bufnr, { autotrigger = false })
  end
end

--- Neovim 0.10: start the client per buffer from a FileType autocmd.
local function start_legacy(group)
  local file = vim.api.nvim_get_runtime_file('lsp/parafill.lua', false)[1]
  local base = file and dofile(file) or {}
  vim.api.nvim_create_autocmd('FileType', {
    group = group,
    pattern = config.options.filetypes,
    callback = function(args)
      local cfg = vim.tbl_deep_extend('force', base, overrides(), { name = M.name })
      local root =
        vim.fs.find(cfg.root_markers, { upward = true, path = vim.fs.dirname(args.file) })[1]
      cfg.root_dir = root and vim.fs.dirname(root)
        or vim.fs.dirname(vim.api.nvim_buf_get_name(args.buf))
      vim.lsp.start(cfg, { bufnr = args.buf })
    end,
  })
end

--- Configures and enables the client; see `:help parafill-setup`.
---@param opts? table
function M.setup(opts)
  config.setup(opts)
  local group = vim.api.nvim_create_augroup('parafill', { clear = true })
  vim.api.nvim_create_autocmd('LspAttach', {
    group = group,
    callback = function(args)
      local client = vim.lsp.get_client_by_id(args.data.client_id)
      if client and client.name == M.name then
        on_attach(args.buf, client)
      end
    end,
  })
  if vim.lsp.config and vim.lsp.enable then
    vim.lsp.config(M.name, overrides())
    vim.lsp.enable(M.name)
  else
    start_legacy(group)
  end
end

return M
