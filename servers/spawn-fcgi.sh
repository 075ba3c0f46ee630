#!/bin/sh
# Starts the app under spawn-fcgi: spawn-fcgi creates the Unix socket, starts CHILDREN
# copies of the app with it on fd 0 (each serves FastCGI there, as under mod_fcgid),
# writes their pids to PIDFILE, one per line, and exits. Put nginx in front with
# servers/nginx-fastcgi.conf ({BACKEND} = unix:$SOCKET).
#
# Replace:
#     {APP}   the program, e.g. /home/user/mysite/mysite.fcgi
#     {ROOT}  the directory for the socket and the pidfile, e.g. /home/user/mysite
#
# Stop it:     kill $(cat /home/user/mysite/mysite.pid)
#              (each copy finishes its request and exits; remove the socket file after)
# Restart it:  stop it as above, wait until the processes are gone, run this again.
#
# spawn-fcgi runs each copy in a session of its own; it does not restart one that exits
# (FCGI_MAX_REQUESTS, a replaced binary): run it under a supervisor, or prefer
# servers/restart.sh (the app's own --socket --processes N) which replaces workers.
# So the copies do not exit when a new binary is uploaded (that would take the site
# down until someone ran this again): FCGI_WATCH_BINARY=0 below; restart instead.
# Or start one copy (-F 1) with FCGI_PROCESSES=N in its environment: the app keeps
# the socket and N workers of its own, replaces one that exits, runs a new upload in
# place, and its workers leave queued connections to each other where separate
# copies each give way to one themselves (lower p99 under load, BENCHMARKS.md).

APP="{APP}"
ROOT="{ROOT}"
SOCKET="$ROOT/mysite.sock"
PIDFILE="$ROOT/mysite.pid"
CHILDREN=2

# -M 0660: the socket is readable and writable by its owner and group; add
# -U www-data (as root) so nginx's user may connect.
FCGI_WATCH_BINARY=0 exec spawn-fcgi -s "$SOCKET" -M 0660 -F "$CHILDREN" -P "$PIDFILE" -- "$APP"
