--- Insert-mode keys for the native inline completion (Neovim 0.12+).
local M = {}

--- The native item as partial.accept() takes it (range in 0-based rows and byte columns).
---@param item vim.lsp.inline_completion.Item
---@return table?
local function native_item(item)
  local text = item.insert_text
  if type(text) ~= 'string' then
    return nil -- a snippet: accepted whole
  end
  local cursor = vim.api.nvim_win_get_cursor(0)
  local r = item.range
  local srow, scol = cursor[1] - 1, cursor[2]
  local erow, ecol = srow, scol
  if r then
    srow, scol, erow, ecol = r.start.row, r.start.col, r.end_.row, r.end_.col
  end
  return { text = text, command = item.command, srow = srow, scol = scol, erow = erow, ecol = ecol }
end

--- Accepts the next `unit` ('word' or 'line') of the ghost text; false when none shows.
---@param bufnr integer
---@param unit 'word'|'line'
---@return boolean
function M.accept_part(bufnr, unit)
  return vim.lsp.inline_completion.get({
    bufnr = bufnr,
    on_accept = function(item)
      local client = vim.lsp.get_client_by_id(item.client_id)
      local it = native_item(item)
      if client and it then
        require('parafill.partial').accept(bufnr, client, it, unit)
      end
    end,
  })
end

--- Maps the accept keys (each falling back to the key itself) and the candidate keys in a buffer.
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
  require('parafill.partial').map_keys(bufnr, o, M.accept_part)
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
