#!/bin/sh
# Runs the machine's cmake; without one, says what to install (see .cargo/config.toml).
if command -v cmake >/dev/null 2>&1; then
  exec cmake "$@"
fi
printf '%s\n' '' \
  'x402-gateway: cmake is not installed. Pingora builds zlib-ng from C sources with it.' \
  'Install it, then run the same command again:' \
  '    Debian, Ubuntu:  sudo apt-get install cmake' \
  '    Fedora, RHEL:    sudo dnf install cmake' \
  '    Alpine:          sudo apk add cmake' \
  '    macOS:           brew install cmake' \
  'A C compiler is needed too (Debian, Ubuntu: sudo apt-get install build-essential).' '' >&2
exit 127
