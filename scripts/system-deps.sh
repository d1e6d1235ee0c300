#!/usr/bin/env bash
# Debian packages the project needs: the colour emoji font the demo's images are rendered
# from, WordNet (wordnet-base: /usr/share/wordnet), whose word/definition pairs the demo's
# stage 1 mixes in, and chromium, the headless browser the search gallery is tested in.
set -euo pipefail
FONT=/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf
WORDNET=/usr/share/wordnet/data.noun
MISSING=()
[ -f "$FONT" ] || MISSING+=(fonts-noto-color-emoji)
[ -f "$WORDNET" ] || MISSING+=(wordnet-base)
command -v chromium >/dev/null || MISSING+=(chromium)
if [ "${#MISSING[@]}" -gt 0 ] && command -v apt-get >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  # wait for a concurrent apt run (another checkout installing) instead of failing on its lock
  APT=(-o DPkg::Lock::Timeout=600)
  $SUDO apt-get "${APT[@]}" update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get "${APT[@]}" install -y -qq --no-install-recommends "${MISSING[@]}" >/dev/null
fi
