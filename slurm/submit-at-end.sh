#!/bin/bash
# Send a finished PyAutoFit output folder to lensd: the last line of a plain PyAutoFit job script.
#
#   python my_fit.py --output "$OUT"                 # PyAutoFit writes $OUT as usual
#   slurm/submit-at-end.sh "$OUT"                    # every fit in it goes to lensd
#
# Or, so that the folder of a fit that crashed half-way is recorded too (lensd stores it as running,
# and it becomes lost): trap '/path/to/slurm/submit-at-end.sh "$OUT"' EXIT
# Give the script's full path: SLURM runs a copy of the batch script, not the one in your folder.
#
# On the daemon's node the records go over its socket; on other nodes into the spool, which the
# daemon reads (`lensd submit --spool`). Prints one line per fit: applied, duplicate or spooled.
#
# Variables (environment):
#   LENSD_SHARED  the shared folder of lensd-daemon.sbatch (default $HOME/.lensd/shared); its
#                 lensd.env sets LENSD_SOCKET and LENSD_SPOOL unless they are set already.
#   LENSD_SOCKET  the daemon's socket (default: lensd's own, $LENSD_SOCKET or $XDG_RUNTIME_DIR/lensd.sock).
#   LENSD_SPOOL   the spool folder used when the socket cannot be reached (default $LENSD_SHARED/spool).
#   LENSD         the lensd command (default: lensd on PATH).

set -euo pipefail

folder=${1:?usage: submit-at-end.sh PYAUTOFIT_OUTPUT_FOLDER}
LENSD_SHARED=${LENSD_SHARED:-$HOME/.lensd/shared}
if [[ -e $LENSD_SHARED/pyproject.toml && -d $LENSD_SHARED/lensd ]]; then
    echo "lensd: LENSD_SHARED=$LENSD_SHARED is a clone of lensd, not a folder for its data: set LENSD_SHARED" >&2
    exit 1
fi
if [[ -r $LENSD_SHARED/lensd.env ]]; then
    # KEY=value lines written by lensd-daemon.sbatch, read as data (never sourced).
    while IFS='=' read -r key value; do
        if [[ $key =~ ^LENSD_[A-Z_]+$ && -z ${!key:-} ]]; then
            printf -v "$key" '%s' "$value"
        fi
    done <"$LENSD_SHARED/lensd.env"
fi
LENSD_SPOOL=${LENSD_SPOOL:-$LENSD_SHARED/spool}
LENSD=${LENSD:-lensd}

socket_option=()
if [[ -n ${LENSD_SOCKET:-} ]]; then
    socket_option=(--socket "$LENSD_SOCKET")
fi
exec "$LENSD" submit "$folder" ${socket_option[@]+"${socket_option[@]}"} --spool "$LENSD_SPOOL"
