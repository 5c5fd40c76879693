#!/bin/sh
# Regenerates the bundled announcement prompts in gateway/rtp/prompts/.
#
# Needs espeak-ng and sox (Debian packages of the same names). Output is what the RTP
# player expects: 8000 Hz, mono, 16-bit signed PCM WAV (G.711 is defined at 8 kHz, so
# resampling here once avoids doing it per call). sox trims leading/trailing silence
# (so the notice starts at once and the call is not held longer than needed), adds
# 100 ms of silence at each end (a clean start/stop after the µ/A-law step) and
# normalises to -3 dBFS (headroom for the G.711 companders). -R seeds the dither with a
# fixed number, so the same espeak-ng and sox give the same bytes (a reproducible build).
#
# Usage: deploy/prompts/make-prompts.sh [output-dir]
set -eu

OUT=${1:-"$(dirname "$0")/../../gateway/rtp/prompts"}
SPEED=${SPEED:-150}   # words per minute; espeak-ng's 175 default is hurried on a phone line
mkdir -p "$OUT"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

make() {  # make <name> <espeak-voice> <text>
    espeak-ng -v "$2" -s "$SPEED" -w "$TMP/raw.wav" "$3"
    sox -R "$TMP/raw.wav" -r 8000 -c 1 -b 16 -e signed-integer "$OUT/$1.wav" \
        silence 1 0.02 0.5% reverse silence 1 0.02 0.5% reverse \
        pad 0.1 0.1 gain -n -3
    echo "$OUT/$1.wav: $(soxi -D "$OUT/$1.wav") s"
}

# Recording notice, played before the call reaches staff (privacy policy promise).
make recording-notice.fi fi "Tämä puhelu voidaan tallentaa."
make recording-notice.sv sv "Det här samtalet kan komma att spelas in."
make recording-notice.en en-gb "This call may be recorded."

# Nomadic emergency-call warning (call from outside the registered office address). It
# names the way out (issue 14): the 112 Suomi app's location is keyed to the caller's
# mobile number, so a softphone presenting a company number gets none of it.
make nomadic-warning.fi fi "Puhelu ei ohjaudu lähimpään hätäkeskukseen, koska soitat toimipaikan ulkopuolelta. Käytä matkapuhelinta tai 112 Suomi -sovellusta."
make nomadic-warning.sv sv "Samtalet går inte till närmaste nödcentral, eftersom du ringer utanför kontoret. Använd en mobiltelefon eller appen 112 Suomi."
make nomadic-warning.en en-gb "This call does not reach the nearest emergency centre: you are outside the registered office. Use a mobile phone or the 112 Suomi app."
