--- Accepting part of the ghost text: its next word or its next line (`:help parafill-accept`).
--- The part is inserted at the cursor; the editor then asks again and the server answers with
--- the rest from typing-through, without running the model. Taking what is left of it in full
--- is a full accept: the item's command runs, which counts the suggestion accepted.
local M = {}

--- The part of `rest` (the ghost text not yet in the buffer) that accepting a `unit` takes: a
--- 'word' is the blanks before it and a run of word characters (or else of other characters);
--- a 'line' is the rest of the line, or the next line when `rest` starts with a line break.
---@param rest string
---@param unit 'word'|'line'
---@return string
function M.piece(rest, unit)
  if unit == 'line' then
    return rest:match('^\n?[^\n]*')
  end
  return rest:match('^%s*[%w_]+') or rest:match('^%s*[^%w_%s]+') or rest
end

--- What is left of `text`, an item inserted from (`srow`, `scol`) (0-based, byte column), after
--- what was typed up to the cursor; nil when the buffer no longer agrees with it.
---@param bufnr integer
---@param srow integer
---@param scol integer
---@param text string
---@return string?
function M.rest(bufnr, srow, scol, text)
  local cursor = vim.api.nvim_win_get_cursor(0)
  local crow, ccol = cursor[1] - 1, cursor[2]
  if crow < srow or (crow == srow and ccol < scol) then
    return nil
  end
  local typed = table.concat(vim.api.nvim_buf_get_text(bufnr, srow, scol, crow, ccol, {}), '\n')
  if text:sub(1, #typed) ~= typed then
    return nil
  end
  return text:sub(#typed + 1)
end

--- Replaces the text from the cursor to (`erow`, `ecol`) (the cursor when nil or before it)
--- with `text` and moves the cursor after it.
---@param bufnr integer
---@param text string
---@param erow? integer
---@param ecol? integer
function M.insert(bufnr, text, erow, ecol)
  local cursor = vim.api.nvim_win_get_cursor(0)
  local row, col = cursor[1] - 1, cursor[2]
  if not erow or erow < row or (erow == row and ecol < col) then
    erow, ecol = row, col
  end
  local lines = vim.split(text, '\n', { plain = true })
  vim.api.nvim_buf_set_text(bufnr, row, col, erow, ecol, lines)
  local last = (#lines == 1 and col or 0) + #lines[#lines]
  vim.api.nvim_win_set_cursor(0, { row + #lines, last })
end

--- Runs an accepted item's command (`parafill.accepted`: the acceptance statistics).
---@param client vim.lsp.Client
---@param command table? lsp.Command
---@param bufnr integer
function M.run_command(client, command, bufnr)
  if not command then
    return
  end
  local params = { command = command.command, arguments = command.arguments }
  require('parafill.client').request(
    client,
    'workspace/executeCommand',
    params,
    function() end,
    bufnr
  )
end

--- Accepts the next `unit` of an item shown from (`srow`, `scol`) to (`erow`, `ecol`), or all of
--- what is left of it (running its command) when that is all there is. False when the buffer
--- no longer agrees with the item.
---@param bufnr integer
---@param client vim.lsp.Client
---@param item {text: string, command: table?, srow: integer, scol: integer, erow: integer, ecol: integer}
---@param unit 'word'|'line'
---@return boolean
function M.accept(bufnr, client, item, unit)
  local rest = M.rest(bufnr, item.srow, item.scol, item.text)
  if not rest or rest == '' then
    return false
  end
  local piece = M.piece(rest, unit)
  if piece == rest then
    M.insert(bufnr, rest, item.erow, item.ecol)
    M.run_command(client, item.command, bufnr)
  else
    M.insert(bufnr, piece)
  end
  return true
end

--- Insert-mode mappings of `o.accept_word_key` / `o.accept_line_key` in `bufnr` to
--- `accept_part(bufnr, unit)`; a key with nothing to accept types itself.
---@param bufnr integer
---@param o table
---@param accept_part fun(bufnr: integer, unit: 'word'|'line'): boolean
function M.map_keys(bufnr, o, accept_part)
  for unit, key in pairs({ word = o.accept_word_key, line = o.accept_line_key }) do
    if key then
      vim.keymap.set('i', key, function()
        if not accept_part(bufnr, unit) then
          return key
        end
      end, { buffer = bufnr, expr = true, desc = 'Parafill: accept the next ' .. unit })
    end
  end
end

return M
