-- User commands only; `require('parafill').setup()` starts the client.
if vim.g.loaded_parafill then
  return
end
vim.g.loaded_parafill = true

vim.api.nvim_create_user_command(
  'ParafillFill',
  function(args)
    require('parafill').fill(args.range > 0 and { args.line1, args.line2 } or nil)
  end,
  { range = true, desc = 'Parafill: fill the selected lines, or every <|fill|> hole in the buffer' }
)

vim.api.nvim_create_user_command('ParafillStatus', function()
  require('parafill').status()
end, { desc = 'Parafill: show the server and model status' })

vim.api.nvim_create_user_command('ParafillSteps', function()
  require('parafill').steps()
end, { desc = 'Parafill: show how the last suggestion was denoised, step by step' })
