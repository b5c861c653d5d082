--- `:ParafillFill`, `:ParafillStatus` and `:ParafillSteps`: the server's `parafill.fill` command,
--- `parafill/status` and `parafill/steps`.
local client_mod = require('parafill.client')

local M = {}

local FILL_COMMAND = 'parafill.fill'
local STATUS_METHOD = 'parafill/status'
local STEPS_METHOD = 'parafill/steps'

---@return vim.lsp.Client?
local function client_or_warn(bufnr)
  local client = client_mod.get(bufnr)
  if not client then
    vim.notify(
      'Parafill: no server attached to this buffer (see :checkhealth vim.lsp)',
      vim.log.levels.WARN
    )
  end
  return client
end

--- Length of `line` in the client's position encoding.
local function char_len(line, encoding)
  if encoding == 'utf-8' then
    return #line
  end
  local ok, n = pcall(vim.str_utfindex, line, encoding)
  if ok then
    return n
  end
  local u32, u16 = vim.str_utfindex(line)
  return encoding == 'utf-16' and u16 or u32
end

--- The LSP range of lines `first`..`last` (1-based), narrowed to the last charwise visual
--- selection when it spans exactly those lines.
local function range_of(bufnr, first, last, encoding)
  local lines = vim.api.nvim_buf_get_lines(bufnr, first - 1, last, false)
  local s = { line = first - 1, character = 0 }
  local e = { line = last - 1, character = char_len(lines[#lines] or '', encoding) }
  local vs, ve = vim.fn.getpos("'<"), vim.fn.getpos("'>")
  if vim.fn.visualmode() == 'v' and vs[2] == first and ve[2] == last then
    local first_line, last_line = lines[1] or '', lines[#lines] or ''
    s.character = char_len(first_line:sub(1, vs[3] - 1), encoding)
    -- '> is inclusive: take the whole last character.
    local stop = math.min(#last_line, ve[3] + vim.str_utf_end(last_line, math.max(ve[3], 1)))
    e.character = char_len(last_line:sub(1, stop), encoding)
  end
  return { start = s, ['end'] = e }
end

--- Fills lines `range` ({first, last}, 1-based), or every `<|fill|>` hole when nil. The server
--- answers with workspace/applyEdit, which Neovim applies.
---@param range? integer[]
---@param bufnr? integer
function M.fill(range, bufnr)
  bufnr = bufnr or vim.api.nvim_get_current_buf()
  local client = client_or_warn(bufnr)
  if not client then
    return
  end
  local args = { uri = vim.uri_from_bufnr(bufnr) }
  if range then
    args.range = range_of(bufnr, range[1], range[2], client.offset_encoding)
  end
  local params = { command = FILL_COMMAND, arguments = { args } }
  client_mod.request(client, 'workspace/executeCommand', params, function(err)
    if err then
      vim.notify(
        'Parafill: fill failed: ' .. (err.message or vim.inspect(err)),
        vim.log.levels.ERROR
      )
    end
  end, bufnr)
end

--- The last status the server reported (see `status()`).
---@type table?
M.last_status = nil

--- Asks the server for its status and shows it; `on_result` gets the status table instead.
---@param on_result? fun(status: table?, err: table?)
---@param bufnr? integer
function M.status(on_result, bufnr)
  bufnr = bufnr or vim.api.nvim_get_current_buf()
  local client = client_or_warn(bufnr)
  if not client then
    return
  end
  client_mod.request(client, STATUS_METHOD, {}, function(err, result)
    M.last_status = result
    if on_result then
      return on_result(result, err)
    end
    if err then
      vim.notify(
        'Parafill: status failed: ' .. (err.message or vim.inspect(err)),
        vim.log.levels.ERROR
      )
      return
    end
    local parts = {}
    local context = M.context_summary(result)
    if context ~= '' then
      parts[1] = context -- the files that fed the last suggestion, not their text
    end
    for k, v in vim.spairs(result or {}) do
      if k ~= 'context' then
        parts[#parts + 1] = ('%s: %s'):format(
          k,
          type(v) == 'table' and vim.inspect(v) or tostring(v)
        )
      end
    end
    vim.notify('Parafill\n' .. table.concat(parts, '\n'), vim.log.levels.INFO)
  end, bufnr)
end

--- The lines that show a `parafill/steps` answer: each denoising step of the last suggestion,
--- masked slots as the answer's `mask` glyph.
---@param r table
---@return string[]
function M.steps_lines(r)
  local lines = {
    'Parafill: how the last suggestion was denoised, step by step',
    ('%s region, %d steps, %d tokens, %d ms; %s = a slot still masked'):format(
      r.kind or '?',
      r.stepsUsed or #r.steps,
      r.tokens or 0,
      math.floor((r.modelMs or 0) + 0.5),
      r.mask or '?'
    ),
    '',
  }
  local function add(label, text)
    for i, line in ipairs(vim.split(text, '\n', { plain = true })) do
      lines[#lines + 1] = (i == 1 and label or (' '):rep(#label)) .. ' | ' .. line
    end
  end
  for i, step in ipairs(r.steps or {}) do
    add(('step %2d'):format(i), step)
  end
  lines[#lines + 1] = ''
  add('shown  ', r.suggestion or '')
  return lines
end

--- Shows `lines` in a floating scratch window (q or <Esc> closes it); returns the window.
---@param lines string[]
---@param mask string?
---@return integer
local function float(lines, mask)
  local buf = vim.api.nvim_create_buf(false, true)
  vim.api.nvim_buf_set_lines(buf, 0, -1, false, lines)
  vim.bo[buf].modifiable = false
  vim.bo[buf].bufhidden = 'wipe'
  vim.bo[buf].filetype = 'parafillsteps'
  local width = 20
  for _, l in ipairs(lines) do
    width = math.max(width, vim.fn.strdisplaywidth(l))
  end
  width = math.min(width, vim.o.columns - 4)
  local height = math.min(#lines, math.max(1, vim.o.lines - 4))
  local win = vim.api.nvim_open_win(buf, true, {
    relative = 'editor',
    row = math.floor((vim.o.lines - height) / 2) - 1,
    col = math.floor((vim.o.columns - width) / 2),
    width = width,
    height = height,
    style = 'minimal',
    border = 'rounded',
    title = ' Parafill: denoising ',
  })
  vim.api.nvim_set_hl(0, 'ParafillMask', { link = 'NonText', default = true })
  if mask and mask ~= '' then
    vim.fn.matchadd('ParafillMask', vim.fn.escape(mask, '\\'), 10, -1, { window = win })
  end
  for _, key in ipairs({ 'q', '<Esc>' }) do
    vim.keymap.set('n', key, '<Cmd>close<CR>', { buffer = buf, nowait = true })
  end
  return win
end

--- Shows how the buffer's last suggestion was denoised (the server keeps the last one per
--- document); `on_result` gets the answer (nil when there is none) instead.
---@param on_result? fun(steps: table?, err: table?)
---@param bufnr? integer
function M.steps(on_result, bufnr)
  bufnr = bufnr or vim.api.nvim_get_current_buf()
  local client = client_or_warn(bufnr)
  if not client then
    return
  end
  local params = { uri = vim.uri_from_bufnr(bufnr) }
  client_mod.request(client, STEPS_METHOD, params, function(err, result)
    if on_result then
      return on_result(result, err)
    end
    if err then
      vim.notify(
        'Parafill: steps failed: ' .. (err.message or vim.inspect(err)),
        vim.log.levels.ERROR
      )
    elseif not result or result == vim.NIL then
      vim.notify('Parafill: no suggestion in this buffer yet', vim.log.levels.INFO)
    else
      float(M.steps_lines(result), result.mask)
    end
  end, bufnr)
end

--- What fed the last suggestion beyond its file, as the server words it ("context: 3 chunks
--- from core.py, grouping.py"), or '' when nothing did.
---@param status table?
---@return string
function M.context_summary(status)
  local ctx = type(status) == 'table' and status.context or nil
  local last = type(ctx) == 'table' and ctx.last or nil
  local summary = type(last) == 'table' and last.summary or nil
  return type(summary) == 'string' and summary or ''
end

--- Short text for a statusline: the state and last latency from the last status seen, and the
--- files that fed the last suggestion beyond its own.
---@return string
function M.statusline()
  local s = M.last_status
  if not s then
    return ''
  end
  local latency = s.lastLatencyMs
  if type(latency) ~= 'number' and type(s.latencyMs) == 'table' then
    latency = s.latencyMs.p50
  end
  latency = type(latency) == 'number' and latency or nil
  local text = latency and ('parafill %s %d ms'):format(s.state or '?', latency)
    or ('parafill ' .. (s.state or '?'))
  local context = M.context_summary(s)
  return context ~= '' and (text .. ' · ' .. context) or text
end

return M
