# Hello-world FastCGI responder with flup (pip install flup). WSGIServer() without a
# bindAddress serves the listening socket on fd 0 (as mod_fcgid starts it); flup's
# default server is threaded, so it serves several connections at once (under the GIL).
from flup.server.fcgi import WSGIServer

BODY = b"Hello World\n"


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "12")])
    return [BODY]


if __name__ == "__main__":
    WSGIServer(app).run()
