#!/usr/bin/env bash
# Debian packages the demo needs: the colour emoji font its images are rendered from, and
# WordNet (wordnet-base: /usr/share/wordnet), whose word/definition pairs stage 1 mixes in.
set -euo pipefail
FONT=/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf
WORDNET=/usr/share/wordnet/data.noun
if { [ ! -f "$FONT" ] || [ ! -f "$WORDNET" ]; } && command -v apt-get >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    fonts-noto-color-emoji wordnet-base >/dev/null
fi
