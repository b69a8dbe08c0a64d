#!/bin/sh
# Test wrapper: wrapper.sh [--child-ignores-term] -- CMD [ARGS...]
#
# Starts CMD as a background child (so CMD is a grandchild of whoever started
# this script), prints "wrapper pid=$$ child=$!" and waits for it, like users'
# wrapper scripts around llama-server do.  The wrapper does NOT forward
# SIGTERM: on SIGTERM it simply dies (default disposition while in `wait`)
# and leaves CMD running as an orphan, so the proxy has to signal the whole
# process group.  With --child-ignores-term, CMD starts with SIGTERM ignored.
#
# Note: as POSIX requires for `&` without job control, the child's stdin is
# /dev/null and it starts with SIGINT/SIGQUIT ignored.

ignore_term=0
while [ $# -gt 0 ]; do
    case "$1" in
        --child-ignores-term) ignore_term=1; shift ;;
        --) shift; break ;;
        -*) echo "wrapper: unknown option: $1" >&2; exit 2 ;;
        *) break ;;
    esac
done
if [ $# -eq 0 ]; then
    echo "usage: wrapper.sh [--child-ignores-term] -- CMD [ARGS...]" >&2
    exit 2
fi

if [ "$ignore_term" = 1 ]; then
    ( trap '' TERM; exec "$@" ) &
else
    "$@" &
fi
child=$!
echo "wrapper pid=$$ child=$child"
wait "$child"
status=$?
echo "wrapper: child $child exited with status $status"
exit "$status"
