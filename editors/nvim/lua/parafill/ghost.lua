--- Ghost text without vim.lsp.inline_completion (Neovim 0.10/0.11, or `inline.backend =
--- 'virtual_text'`): asks textDocument/inlineCompletion after typing pauses, shows the first item
--- as virtual text at the cursor, the accept key inserts it (and runs its command), the
--- accept-word and accept-line keys insert its next word or line (lua/parafill/partial.lua).
local M = {}

local ns = vim.api.nvim_create_namespace('parafill.ghost')
local AUTOMATIC = 2 -- lsp.InlineCompletionTriggerKind.Automatic

---@type table<integer, {item: table?, timer: uv.uv_timer_t, tick: integer, client: vim.lsp.Client}>
local state = {}

--- Byte column of an LSP character offset in `line`.
local function byte_col(line, character, encoding)
  if encoding == 'utf-8' then
    return math.min(character, #line)
  end
  local ok, col = pcall(vim.str_byteindex, line, encoding, character, false)
  if ok then
    return col
  end
  return vim.str_byteindex(line, character, encoding == 'utf-16')
end

--- The item's range in (0-based row, byte col), or the cursor when it has none.
local function item_range(bufnr, item, encoding)
  local cursor = vim.api.nvim_win_get_cursor(0)
  if not item.range then
    return cursor[1] - 1, cursor[2], cursor[1] - 1, cursor[2]
  end
  local s, e = item.range.start, item.range['end']
  local function line(row)
    return vim.api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ''
  end
  return s.line,
    byte_col(line(s.line), s.character, encoding),
    e.line,
    byte_col(line(e.line), e.character, encoding)
end

local function text_of(item)
  return type(item.insertText) == 'table' and item.insertText.value or item.insertText
end

function M.clear(bufnr)
  vim.api.nvim_buf_clear_namespace(bufnr, ns, 0, -1)
  if state[bufnr] then
    state[bufnr].item = nil
  end
end

--- Shows the part of the item that is not yet typed, after the cursor.
local function show(bufnr, item, encoding)
  M.clear(bufnr)
  local srow, scol = item_range(bufnr, item, encoding)
  local cursor = vim.api.nvim_win_get_cursor(0)
  local typed =
    table.concat(vim.api.nvim_buf_get_text(bufnr, srow, scol, cursor[1] - 1, cursor[2], {}), '\n')
  local text = text_of(item)
  if text:sub(1, #typed) ~= typed or #text == #typed then
    return
  end
  local lines = vim.split(text:sub(#typed + 1), '\n', { plain = true })
  local virt_lines = {}
  for i = 2, #lines do
    virt_lines[#virt_lines + 1] = { { lines[i], 'Comment' } }
  end
  vim.api.nvim_buf_set_extmark(bufnr, ns, cursor[1] - 1, cursor[2], {
    virt_text = { { lines[1], 'Comment' } },
    virt_text_pos = 'inline',
    virt_lines = virt_lines,
    hl_mode = 'combine',
  })
  state[bufnr].item = item
end

local function request(bufnr)
  local st = state[bufnr]
  if
    not st
    or vim.api.nvim_get_current_buf() ~= bufnr
    or not vim.api.nvim_get_mode().mode:match('^i')
  then
    return
  end
  local client = st.client
  local params = vim.lsp.util.make_position_params(0, client.offset_encoding)
  params.context = { triggerKind = AUTOMATIC }
  local tick = vim.api.nvim_buf_get_changedtick(bufnr)
  require('parafill.client').request(
    client,
    'textDocument/inlineCompletion',
    params,
    function(err, result)
      if err or not result or vim.api.nvim_buf_get_changedtick(bufnr) ~= tick then
        return
      end
      local items = result.items or result
      if items[1] and vim.api.nvim_get_mode().mode:match('^i') then
        show(bufnr, items[1], client.offset_encoding)
      end
    end,
    bufnr
  )
end

--- Inserts the shown item; returns false when there is none.
---@param bufnr? integer
---@return boolean
function M.accept(bufnr)
  bufnr = bufnr or vim.api.nvim_get_current_buf()
  local st = state[bufnr]
  local item = st and st.item
  if not item then
    return false
  end
  local srow, scol, erow, ecol = item_range(bufnr, item, st.client.offset_encoding)
  local cursor = vim.api.nvim_win_get_cursor(0)
  if not item.range then
    erow, ecol = cursor[1] - 1, cursor[2]
  end
  M.clear(bufnr)
  vim.schedule(function()
    local lines = vim.split(text_of(item), '\n', { plain = true })
    vim.api.nvim_buf_set_text(bufnr, srow, scol, erow, ecol, lines)
    local last = #lines == 1 and scol + #lines[1] or #lines[#lines]
    vim.api.nvim_win_set_cursor(0, { srow + #lines, last })
    require('parafill.partial').run_command(st.client, item.command, bufnr)
  end)
  return true
end

--- Inserts the next `unit` ('word' or 'line') of the shown item; false when there is none.
---@param bufnr? integer
---@param unit 'word'|'line'
---@return boolean
function M.accept_part(bufnr, unit)
  bufnr = bufnr or vim.api.nvim_get_current_buf()
  local st = state[bufnr]
  local item = st and st.item
  if not item or type(text_of(item)) ~= 'string' then
    return false
  end
  local srow, scol, erow, ecol = item_range(bufnr, item, st.client.offset_encoding)
  local it = {
    text = text_of(item),
    command = item.command,
    srow = srow,
    scol = scol,
    erow = erow,
    ecol = ecol,
  }
  M.clear(bufnr)
  vim.schedule(function()
    require('parafill.partial').accept(bufnr, st.client, it, unit)
  end)
  return true
end

--- Starts the ghost text in a buffer for a client.
---@param bufnr integer
---@param client vim.lsp.Client
---@param o table config.options.inline
function M.attach(bufnr, client, o)
  bufnr = bufnr == 0 and vim.api.nvim_get_current_buf() or bufnr
  if state[bufnr] then
    return
  end
  state[bufnr] = { timer = assert(vim.uv.new_timer()), client = client }
  local group = vim.api.nvim_create_augroup('parafill.ghost.' .. bufnr, { clear = true })
  vim.api.nvim_create_autocmd({ 'TextChangedI', 'InsertEnter', 'CursorMovedI' }, {
    group = group,
    buffer = bufnr,
    callback = function()
      local st = state[bufnr]
      M.clear(bufnr)
      st.timer:stop()
      st.timer:start(
        o.debounce_ms,
        0,
        vim.schedule_wrap(function()
          request(bufnr)
        end)
      )
    end,
  })
  vim.api.nvim_create_autocmd({ 'InsertLeave', 'BufLeave' }, {
    group = group,
    buffer = bufnr,
    callback = function()
      M.clear(bufnr)
    end,
  })
  vim.api.nvim_create_autocmd('LspDetach', {
    group = group,
    buffer = bufnr,
    callback = function(args)
      if args.data.client_id == client.id then
        state[bufnr].timer:close()
        state[bufnr] = nil
        M.clear(bufnr)
        vim.api.nvim_del_augroup_by_id(group)
      end
    end,
  })
  if o.accept_key then
    vim.keymap.set('i', o.accept_key, function()
      if not M.accept(bufnr) then
        return o.accept_key
      end
    end, { buffer = bufnr, expr = true, desc = 'Parafill: accept the ghost text' })
  end
  require('parafill.partial').map_keys(bufnr, o, M.accept_part)
end

return M
