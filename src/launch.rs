// How we were started: a listening socket on fd 0 (FastCGI), a CGI environment, or
// neither (a person at a terminal, who gets an explanation).

use crate::sys::{self, Listener};

pub(crate) enum Launch {
    /// mod_fcgid, mod_fastcgi, lighttpd `bin-path`, spawn-fcgi: fd 0 is a listening socket.
    FastCgi(Listener),
    /// `GATEWAY_INTERFACE` is set (or `FCGI_FORCE_CGI=1`): one request.
    Cgi,
    /// Neither.
    Other,
}

/// Decides how to serve. Never reads stdin, so it cannot hang on a terminal.
pub(crate) fn detect(force_cgi: bool) -> Launch {
    if force_cgi {
        return Launch::Cgi;
    }
    if sys::is_listening_socket(0) {
        match Listener::take_stdin() {
            Ok(l) => return Launch::FastCgi(l),
            Err(e) => log::error!("fd 0 is a listening socket but cannot be used: {e}"),
        }
    }
    if std::env::var_os("GATEWAY_INTERFACE").is_some() {
        return Launch::Cgi;
    }
    Launch::Other
}

/// What we print when started by hand: what this program is and how to deploy it.
pub(crate) fn explanation(program: &str) -> String {
    let tty = if sys::is_terminal(0) {
        "a terminal"
    } else {
        "something that is not a web server"
    };
    format!(
        "{program}: this is a web application built with fcgi-shim (FastCGI and CGI).
It was started from {tty}, so there is nothing to serve.

A web server starts it:
  - Apache mod_fcgid or mod_fastcgi, lighttpd `bin-path`, spawn-fcgi: they pass a
    listening socket on stdin and it serves FastCGI on it;
  - any CGI-capable server (Apache mod_cgi, ...): it sets GATEWAY_INTERFACE and it
    answers one request.

To deploy on shared hosting: upload it as public_html/{program} (mode 755), and
copy the matching .htaccess from fcgi-shim's htaccess/ folder next to it
(htaccess/fcgid-root.htaccess for the site root, fcgid-subdir.htaccess for a
subdirectory, cgi-fallback.htaccess where only CGI is allowed).

To try one request here, as CGI:
  GATEWAY_INTERFACE=CGI/1.1 REQUEST_METHOD=GET PATH_INFO=/ ./{program}
"
    )
}
