#!/bin/sh
# Starts the app as a standalone FastCGI server on a Unix socket, or restarts it: the
# restart script from Django's runfcgi guide, for an fcgi-shim app. Run it after every
# upload of a new binary (and from cron with `@reboot` to start the site at boot).
#
# A restart loses no request: the old server, told to stop, keeps accepting until the
# new one has renamed its own socket over the old file, then finishes the requests it
# has and exits (removing its pidfile and socket file only if they are still its own).
# The script returns once the new server serves; if it cannot start, it says why and
# exits with status 1.
#
# Replace these settings:
#     {ROOT}  the project directory, e.g. /home/user/mysite
#     {APP}   the program, e.g. /home/user/mysite/mysite.fcgi
# Point the web server at $SOCKET: servers/nginx-fastcgi.conf ({BACKEND} =
# unix:/home/user/mysite/mysite.sock) or servers/lighttpd-socket.conf.
# Stop the server:  kill $(cat /home/user/mysite/mysite.pid)

PROJDIR="{ROOT}"
APP="{APP}"
PIDFILE="$PROJDIR/mysite.pid"
SOCKET="$PROJDIR/mysite.sock"

cd "$PROJDIR" || exit 1
if [ -f "$PIDFILE" ]; then
    pid=`cat -- "$PIDFILE"`
    # Only our server: a pidfile left over (after a reboot, say) may name a process
    # that has nothing to do with the site. Ours was started with this pidfile.
    if tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "--pidfile $PIDFILE"; then
        kill "$pid"
    fi
    rm -f -- "$PIDFILE"
fi
# A clean environment with the app's settings (see the README's settings table).
# Add `--umask 0002` when the web server reaches the socket through a shared group, and
# `--processes 4` for four worker processes.
exec /usr/bin/env - \
    PATH=/usr/local/bin:/usr/bin:/bin \
    FCGI_LOG=info \
    "$APP" --socket "$SOCKET" --pidfile "$PIDFILE" \
    --daemonize --errlog "$PROJDIR/mysite.log"
