--- Insert-mode keys for the native inline completion (Neovim 0.12+).
local M = {}

--- Maps the accept key (falling back to the key itself) and the candidate keys in a buffer.
---@param bufnr integer
---@param o table config.options.inline
function M.map_native(bufnr, o)
  if o.accept_key then
    vim.keymap.set('i', o.accept_key, function()
      if not vim.lsp.inline_completion.get({ bufnr = bufnr }) then
        return o.accept_key
      end
    end, { buffer = bufnr, expr = true, desc = 'Parafill: accept the ghost text' })
  end
  if o.next_key then
    vim.keymap.set('i', o.next_key, function()
      vim.lsp.inline_completion.select({ bufnr = bufnr, count = 1 })
    end, { buffer = bufnr, desc = 'Parafill: next candidate' })
  end
  if o.prev_key then
    vim.keymap.set('i', o.prev_key, function()
      vim.lsp.inline_completion.select({ bufnr = bufnr, count = -1 })
    end, { buffer = bufnr, desc = 'Parafill: previous candidate' })
  end
end

return M
