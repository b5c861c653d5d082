--- Parafill for Neovim: ghost-text completion from the Parafill language server.
--- This module only re-exports the API; see `:help parafill`.
local M = {}

--- Configures and starts the client. See `:help parafill-setup` and lua/parafill/config.lua.
---@param opts? table
function M.setup(opts)
  require('parafill.client').setup(opts)
end

--- Fills lines {first, last} (1-based), or every `<|fill|>` hole when `range` is nil.
---@param range? integer[]
function M.fill(range)
  require('parafill.commands').fill(range)
end

--- Shows the server status, or passes it to `on_result`.
---@param on_result? fun(status: table?, err: table?)
function M.status(on_result)
  require('parafill.commands').status(on_result)
end

--- Shows how the last suggestion was denoised, or passes the steps to `on_result`.
---@param on_result? fun(steps: table?, err: table?)
function M.steps(on_result)
  require('parafill.commands').steps(on_result)
end

--- Short status text for a statusline.
---@return string
function M.statusline()
  return require('parafill.commands').statusline()
end

return M
