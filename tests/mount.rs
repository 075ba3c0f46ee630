// The mount path, table-driven: the variables real servers send and the prefix and
// app-relative path the app must see. The Apache rows are a capture from a real Apache
// 2.4 (tests/data/apache-2.4-rewrite-vars.txt); the others were read off lighttpd
// 1.4.69 and nginx 1.22 with the configurations named in each row.

use fcgi_shim::Vars;
use fcgi_shim::mount::{Mount, MountSource, rebuild};

/// One row: what the server sent, what the app must see.
struct Row {
    what: &'static str,
    vars: &'static [(&'static str, &'static str)],
    forced: Option<&'static str>,
    exe: &'static str,
    script_name: &'static str,
    path_info: &'static str,
}

fn check(row: &Row) {
    let vars = Vars::from_pairs(row.vars.iter().copied());
    let m: Mount = rebuild(&vars, row.forced, Some(row.exe));
    assert_eq!(
        (
            m.script_name.as_str(),
            String::from_utf8_lossy(&m.path_info).as_ref()
        ),
        (row.script_name, row.path_info),
        "{} (rule used: {:?})",
        row.what,
        m.source
    );
}

/// Sections of the capture: `== GET <uri> -> 200` then `NAME=value` lines.
fn apache_capture() -> Vec<(String, Vars)> {
    let text = include_str!("data/apache-2.4-rewrite-vars.txt");
    let mut out: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("== GET ") {
            let uri = rest.split(" -> ").next().unwrap().to_owned();
            out.push((uri, Vec::new()));
        } else if let Some((k, v)) = line.split_once('=') {
            if !line.starts_with('#') {
                if let Some(last) = out.last_mut() {
                    last.1.push((k.to_owned(), v.to_owned()));
                }
            }
        }
    }
    out.into_iter()
        .map(|(uri, vars)| (uri, Vars::from_pairs(vars)))
        .collect()
}

#[test]
fn apache_mod_rewrite_capture() {
    // (request, expected prefix, expected app-relative path)
    let expected = [
        ("/a/b?x=1", "", "/a/b", MountSource::RedirectUrl),
        (
            "/blog/posts/1?x=1",
            "/blog",
            "/posts/1",
            MountSource::RedirectUrl,
        ),
        ("/blog/", "/blog", "/", MountSource::RedirectUrl),
        (
            "/blog/caf%C3%A9/a%20b",
            "/blog",
            "/café/a b",
            MountSource::RedirectUrl,
        ),
        (
            "/blog//double//slash",
            "/blog",
            "/double/slash",
            MountSource::RedirectUrl,
        ),
        (
            "/blog/mysite.cgi/direct",
            "/blog/mysite.cgi",
            "/direct",
            MountSource::RequestUri,
        ),
        ("/forced/x", "/custom", "/x", MountSource::Forced),
    ];
    let captured = apache_capture();
    assert_eq!(captured.len(), expected.len(), "capture sections");
    for ((uri, vars), (want_uri, prefix, path, source)) in captured.iter().zip(expected) {
        assert_eq!(uri, want_uri);
        let m = rebuild(vars, None, Some("mysite.cgi"));
        assert_eq!(m.script_name, prefix, "GET {uri}");
        assert_eq!(String::from_utf8_lossy(&m.path_info), path, "GET {uri}");
        assert_eq!(m.source, source, "GET {uri}");
        // The same, under mod_fcgid with a different program name, and with a process
        // setting that a per-request FORCE_SCRIPT_NAME must override.
        if uri == "/forced/x" {
            let m = rebuild(vars, Some("/process"), Some("mysite.fcgi"));
            assert_eq!(m.script_name, "/custom");
        }
    }
}

/// A `%23` that mod_rewrite (without `B=#`) decoded into the rewritten URL, where the
/// `#` cut `PATH_INFO` and `QUERY_STRING`: the request's own path and query are used.
/// (As Apache 2.4 sends it for `/blog/a%23b?q=1` with htaccess/fcgid-subdir.htaccess.)
#[test]
fn a_hash_cut_by_mod_rewrite_is_repaired_from_request_uri() {
    for (folder, exe, uri, want_prefix, want_path, want_query) in [
        (
            "/blog",
            "mysite.fcgi",
            "/blog/a%23b?q=1",
            "/blog",
            "/a#b",
            "q=1",
        ),
        ("", "mysite.fcgi", "/a%23b/c", "", "/a#b/c", ""),
        ("/blog", "mysite.fcgi", "/blog/%23tag", "/blog", "/#tag", ""),
        // The cut PATH_INFO (/x) happens to end REDIRECT_URL (/blog/x#/x): a prefix
        // with a `#` in it (/blog/x#) is not taken.
        ("/blog", "mysite.fcgi", "/blog/x%23/x", "/blog", "/x#/x", ""),
    ] {
        let script = format!("{folder}/{exe}");
        let decoded = String::from_utf8(
            fcgi_shim::mount::percent_decode(uri.split('?').next().unwrap().as_bytes())
                .into_owned(),
        )
        .unwrap();
        let cut = decoded[folder.len()..]
            .split('#')
            .next()
            .unwrap()
            .to_owned();
        let vars = Vars::from_pairs([
            ("REDIRECT_URL", decoded.as_str()),
            ("REDIRECT_QUERY_STRING", "q=1"),
            ("SCRIPT_NAME", script.as_str()),
            ("PATH_INFO", cut.as_str()),
            ("QUERY_STRING", ""),
            ("REQUEST_URI", uri),
        ]);
        let m = rebuild(&vars, None, Some(exe));
        assert_eq!(m.source, MountSource::CutByRewrite, "{uri}");
        assert_eq!(m.script_name, want_prefix, "{uri}");
        assert_eq!(String::from_utf8_lossy(&m.path_info), want_path, "{uri}");
        assert_eq!(m.query.as_deref(), Some(want_query.as_bytes()), "{uri}");
    }
    // Not our script's folder, or no rewrite, or a SCRIPT_NAME that is the bare file
    // name (no web server sends one; a hostile peer may): left alone, no panic.
    for (script, uri, redirect) in [
        ("mysite.fcgi", "/a%23b", Some("/x")),
        ("/blog/mysite.fcgi", "/other/a%23b", Some("/other/a#b")),
        ("/blog/mysite.fcgi", "/blog/a%23b", None),
        ("/blog/other.fcgi", "/blog/a%23b", Some("/blog/a#b")),
    ] {
        let mut pairs = vec![
            ("SCRIPT_NAME", script),
            ("PATH_INFO", "/a"),
            ("REQUEST_URI", uri),
        ];
        if let Some(r) = redirect {
            pairs.push(("REDIRECT_URL", r));
        }
        let m = rebuild(&Vars::from_pairs(pairs), None, Some("mysite.fcgi"));
        assert_ne!(m.source, MountSource::CutByRewrite, "{script} {uri}");
        assert_eq!(m.query, None);
    }
}

#[test]
fn servers_table() {
    let rows = [
        Row {
            what: "Apache mod_rewrite in server context sets SCRIPT_URL",
            vars: &[
                ("SCRIPT_URL", "/blog/posts/1"),
                ("SCRIPT_NAME", "/blog/mysite.fcgi"),
                ("PATH_INFO", "/posts/1"),
                ("REQUEST_URI", "/blog/posts/1"),
            ],
            forced: None,
            exe: "mysite.fcgi",
            script_name: "/blog",
            path_info: "/posts/1",
        },
        Row {
            what: "SCRIPT_URL not ending with PATH_INFO (a rewrite that renames) is not used",
            vars: &[
                ("SCRIPT_URL", "/old/x"),
                ("REDIRECT_URL", "/old/x"),
                ("SCRIPT_NAME", "/app/mysite.fcgi"),
                ("PATH_INFO", "/new/x"),
                ("REQUEST_URI", "/old/x"),
            ],
            forced: None,
            exe: "mysite.fcgi",
            script_name: "/app/mysite.fcgi",
            path_info: "/new/x",
        },
        Row {
            what: "direct access to the script with no path",
            vars: &[
                ("SCRIPT_NAME", "/blog/mysite.fcgi"),
                ("REQUEST_URI", "/blog/mysite.fcgi"),
            ],
            forced: None,
            exe: "mysite.fcgi",
            script_name: "/blog/mysite.fcgi",
            path_info: "",
        },
        Row {
            what: "dot segments in the request URI",
            vars: &[
                ("REDIRECT_URL", "/blog/posts/1"),
                ("SCRIPT_NAME", "/blog/mysite.fcgi"),
                ("PATH_INFO", "/posts/1"),
                ("REQUEST_URI", "/blog/./x/../posts/1"),
            ],
            forced: None,
            exe: "mysite.fcgi",
            script_name: "/blog",
            path_info: "/posts/1",
        },
        Row {
            what: "Apache, FORCE_SCRIPT_NAME set in the process environment",
            vars: &[
                ("REDIRECT_URL", "/blog/posts/1"),
                ("SCRIPT_NAME", "/blog/mysite.fcgi"),
                ("PATH_INFO", "/posts/1"),
                ("REQUEST_URI", "/blog/posts/1"),
            ],
            forced: Some("/site/"),
            exe: "mysite.fcgi",
            script_name: "/site",
            path_info: "/posts/1",
        },
        Row {
            what: "lighttpd bin-path with a prefix: fastcgi.server = (\"/app\" => ...)",
            vars: &[
                ("SCRIPT_NAME", "/app"),
                ("PATH_INFO", "/x/y"),
                ("REQUEST_URI", "/app/x/y?q=1"),
                ("SERVER_SOFTWARE", "lighttpd/1.4.69"),
            ],
            forced: None,
            exe: "mysite.fcgi",
            script_name: "/app",
            path_info: "/x/y",
        },
        Row {
            what: "lighttpd prefix mount, the prefix itself",
            vars: &[
                ("SCRIPT_NAME", "/app/"),
                ("REQUEST_URI", "/app/"),
                ("SERVER_SOFTWARE", "lighttpd/1.4.69"),
            ],
            forced: Some("/app"),
            exe: "mysite.fcgi",
            script_name: "/app",
            path_info: "/",
        },
        Row {
            what: "lighttpd at \"/\" with fix-root-scriptname",
            vars: &[
                ("SCRIPT_NAME", ""),
                ("PATH_INFO", "/posts/1"),
                ("REQUEST_URI", "/posts/1?x=1"),
            ],
            forced: None,
            exe: "mysite.fcgi",
            script_name: "",
            path_info: "/posts/1",
        },
        Row {
            what: "lighttpd at \"/\" (no fix-root-scriptname), the site root",
            vars: &[("SCRIPT_NAME", "/"), ("REQUEST_URI", "/")],
            forced: None,
            exe: "mysite.fcgi",
            script_name: "",
            path_info: "/",
        },
        Row {
            what: "lighttpd 1.4.69 at \"/\" without fix-root-scriptname splits after the \
                   first segment; FORCE_SCRIPT_NAME=\"\" (bin-environment) repairs it",
            vars: &[
                ("SCRIPT_NAME", "/posts"),
                ("PATH_INFO", "/1"),
                ("REQUEST_URI", "/posts/1?x=1"),
            ],
            forced: Some(""),
            exe: "mysite.fcgi",
            script_name: "",
            path_info: "/posts/1",
        },
        Row {
            what: "older lighttpd at \"/\": the whole path in SCRIPT_NAME, PATH_INFO empty",
            vars: &[
                ("SCRIPT_NAME", "/posts/1"),
                ("PATH_INFO", ""),
                ("REQUEST_URI", "/posts/1?x=1"),
            ],
            forced: None,
            exe: "mysite.fcgi",
            script_name: "",
            path_info: "/posts/1",
        },
        Row {
            what: "lighttpd rewrite to /mysite.fcgi$1 (the Django recipe)",
            vars: &[
                ("SCRIPT_NAME", "/mysite.fcgi"),
                ("PATH_INFO", "/posts/1"),
                ("REQUEST_URI", "/posts/1"),
            ],
            forced: None,
            exe: "mysite.fcgi",
            script_name: "",
            path_info: "/posts/1",
        },
        Row {
            what: "nginx `include fastcgi_params` in location / (no split)",
            vars: &[
                ("SCRIPT_NAME", "/posts/1"),
                ("REQUEST_URI", "/posts/1?x=1"),
                ("DOCUMENT_URI", "/posts/1"),
            ],
            forced: None,
            exe: "mysite.fcgi",
            script_name: "",
            path_info: "/posts/1",
        },
        Row {
            what: "nginx location /app/ without a split, FORCE_SCRIPT_NAME=/app",
            vars: &[("SCRIPT_NAME", "/app/x"), ("REQUEST_URI", "/app/x")],
            forced: Some("/app"),
            exe: "mysite.fcgi",
            script_name: "/app",
            path_info: "/x",
        },
        Row {
            what: "nginx fastcgi_split_path_info ^(/app)(/.*)$",
            vars: &[
                ("SCRIPT_NAME", "/app"),
                ("PATH_INFO", "/caf\u{e9}"),
                ("REQUEST_URI", "/app/caf%C3%A9"),
            ],
            forced: None,
            exe: "mysite.fcgi",
            script_name: "/app",
            path_info: "/caf\u{e9}",
        },
        Row {
            what: "nginx SCRIPT_NAME \"\" and PATH_INFO $uri",
            vars: &[
                ("SCRIPT_NAME", ""),
                ("PATH_INFO", "/x"),
                ("REQUEST_URI", "/x?y"),
            ],
            forced: None,
            exe: "mysite.fcgi",
            script_name: "",
            path_info: "/x",
        },
        Row {
            what: "Apache mod_proxy_fcgi: ProxyPass \"/app/\" \"fcgi://127.0.0.1:9000/\"",
            vars: &[
                ("SCRIPT_NAME", "/app/posts/1"),
                ("SCRIPT_FILENAME", "proxy:fcgi://127.0.0.1:9000/posts/1"),
                ("REQUEST_URI", "/app/posts/1?x=1&y=two"),
                ("CONTEXT_PREFIX", ""),
            ],
            forced: None,
            exe: "mysite.fcgi",
            script_name: "/app",
            path_info: "/posts/1",
        },
        Row {
            what: "Apache mod_proxy_fcgi, the prefix itself",
            vars: &[
                ("SCRIPT_NAME", "/app/"),
                ("SCRIPT_FILENAME", "proxy:fcgi://127.0.0.1:9000/"),
                ("REQUEST_URI", "/app/"),
            ],
            forced: None,
            exe: "mysite.fcgi",
            script_name: "/app",
            path_info: "/",
        },
        Row {
            what: "Apache mod_proxy_fcgi, ProxyPass \"/app\" \"fcgi://127.0.0.1:9000\", /app",
            vars: &[
                ("SCRIPT_NAME", "/app"),
                ("SCRIPT_FILENAME", "proxy:fcgi://127.0.0.1:9000/"),
                ("REQUEST_URI", "/app"),
            ],
            forced: None,
            exe: "mysite.fcgi",
            script_name: "/app",
            path_info: "",
        },
        Row {
            what: "Apache mod_proxy_scgi, an encoded path",
            vars: &[
                ("SCRIPT_NAME", "/scgi/caf\u{e9}/a b"),
                (
                    "SCRIPT_FILENAME",
                    "proxy:scgi://127.0.0.1:4000/caf%C3%A9/a%20b",
                ),
                ("REQUEST_URI", "/scgi/caf%C3%A9/a%20b"),
            ],
            forced: None,
            exe: "mysite.fcgi",
            script_name: "/scgi",
            path_info: "/caf\u{e9}/a b",
        },
        // Apache 2.4.71 mod_proxy_fcgi with `ProxyFCGIBackendType GENERIC` (captured):
        // SCRIPT_FILENAME is the backend path alone, still encoded.
        Row {
            what: "Apache mod_proxy_fcgi GENERIC: ProxyPass \"/gen/\" \"fcgi://127.0.0.1:9000/\"",
            vars: &[
                ("CONTEXT_DOCUMENT_ROOT", "/var/www/html"),
                ("CONTEXT_PREFIX", ""),
                ("DOCUMENT_ROOT", "/var/www/html"),
                ("QUERY_STRING", "x=1"),
                ("REQUEST_URI", "/gen/posts/1?x=1"),
                ("SCRIPT_FILENAME", "/posts/1"),
                ("SCRIPT_NAME", "/gen/posts/1"),
            ],
            forced: None,
            exe: "mysite.fcgi",
            script_name: "/gen",
            path_info: "/posts/1",
        },
        Row {
            what: "Apache mod_proxy_fcgi GENERIC, the prefix itself",
            vars: &[
                ("REQUEST_URI", "/gen/"),
                ("SCRIPT_FILENAME", "/"),
                ("SCRIPT_NAME", "/gen/"),
            ],
            forced: None,
            exe: "mysite.fcgi",
            script_name: "/gen",
            path_info: "/",
        },
        Row {
            what: "Apache mod_proxy_fcgi GENERIC, an encoded path",
            vars: &[
                ("QUERY_STRING", "q=1"),
                ("REQUEST_URI", "/gen/caf%C3%A9/a%20b?q=1"),
                ("SCRIPT_FILENAME", "/caf%C3%A9/a%20b"),
                ("SCRIPT_NAME", "/gen/caf\u{e9}/a b"),
            ],
            forced: None,
            exe: "mysite.fcgi",
            script_name: "/gen",
            path_info: "/caf\u{e9}/a b",
        },
        Row {
            what: "Apache mod_proxy_fcgi GENERIC, a `%25` kept encoded in SCRIPT_FILENAME",
            vars: &[
                ("REQUEST_URI", "/gen/a%2541"),
                ("SCRIPT_FILENAME", "/a%2541"),
                ("SCRIPT_NAME", "/gen/a%41"),
            ],
            forced: None,
            exe: "mysite.fcgi",
            script_name: "/gen",
            path_info: "/a%41",
        },
        Row {
            what: "Apache mod_proxy_fcgi GENERIC, dot segments and `//` resolved",
            vars: &[
                ("REQUEST_URI", "/gen//x/../y"),
                ("SCRIPT_FILENAME", "/y"),
                ("SCRIPT_NAME", "/gen/y"),
            ],
            forced: None,
            exe: "mysite.fcgi",
            script_name: "/gen",
            path_info: "/y",
        },
        Row {
            what: "Apache mod_proxy_fcgi GENERIC, ProxyPass \"/genb\" \"fcgi://127.0.0.1:9000\", /genb",
            vars: &[
                ("REQUEST_URI", "/genb"),
                ("SCRIPT_FILENAME", "/"),
                ("SCRIPT_NAME", "/genb"),
            ],
            forced: None,
            exe: "mysite.fcgi",
            script_name: "/genb",
            path_info: "",
        },
        Row {
            what: "a file-system SCRIPT_FILENAME that does not end the request path is no \
                   GENERIC backend path (a CGI script under another name)",
            vars: &[
                ("SCRIPT_NAME", "/cgi-bin/app.cgi"),
                ("SCRIPT_FILENAME", "/usr/lib/cgi-bin/app.cgi"),
                ("REQUEST_URI", "/cgi-bin/app.cgi"),
            ],
            forced: None,
            exe: "mysite.fcgi",
            script_name: "",
            path_info: "/cgi-bin/app.cgi",
        },
        Row {
            what: "a SCRIPT_FILENAME ending the request path but not at a segment boundary",
            vars: &[
                ("SCRIPT_NAME", "/gen/xposts/1"),
                ("SCRIPT_FILENAME", "posts/1"),
                ("REQUEST_URI", "/gen/xposts/1"),
            ],
            forced: None,
            exe: "mysite.fcgi",
            script_name: "",
            path_info: "/gen/xposts/1",
        },
        Row {
            what: "no SCRIPT_NAME: SCRIPT_FILENAME is not taken for a GENERIC backend path",
            vars: &[("SCRIPT_FILENAME", "/1"), ("REQUEST_URI", "/posts/1")],
            forced: None,
            exe: "mysite.fcgi",
            script_name: "",
            path_info: "/posts/1",
        },
        Row {
            what: "nginx `include scgi_params` alone: neither SCRIPT_NAME nor PATH_INFO",
            vars: &[
                ("REQUEST_URI", "/posts/1?x=1"),
                ("DOCUMENT_URI", "/posts/1"),
            ],
            forced: None,
            exe: "mysite.fcgi",
            script_name: "",
            path_info: "/posts/1",
        },
        Row {
            what: "absolute-form request target (`curl --request-target http://evil.example/...`), direct script URL",
            vars: &[
                ("SCRIPT_NAME", "/blog/mysite.fcgi"),
                ("PATH_INFO", "/posts/1"),
                (
                    "REQUEST_URI",
                    "http://evil.example/blog/mysite.fcgi/posts/1",
                ),
            ],
            forced: None,
            exe: "mysite.fcgi",
            script_name: "/blog/mysite.fcgi",
            path_info: "/posts/1",
        },
        Row {
            what: "absolute-form request target, rewritten URL seen only in REQUEST_URI",
            vars: &[
                ("SCRIPT_NAME", "/blog/mysite.fcgi"),
                ("PATH_INFO", "/posts/1"),
                ("REQUEST_URI", "HTTPS://Evil.Example:8443/blog/posts/1?x=1"),
            ],
            forced: None,
            exe: "mysite.fcgi",
            script_name: "/blog",
            path_info: "/posts/1",
        },
        Row {
            what: "absolute-form request target with no path, nginx without a split",
            vars: &[("SCRIPT_NAME", "/"), ("REQUEST_URI", "http://example.com")],
            forced: None,
            exe: "mysite.fcgi",
            script_name: "",
            path_info: "/",
        },
        Row {
            what: "Apache `ScriptAlias /app /home/u/cgi-bin/mysite.fcgi`, the mount's root",
            vars: &[
                ("SCRIPT_NAME", "/app"),
                ("SCRIPT_FILENAME", "/home/u/cgi-bin/mysite.fcgi"),
                ("REQUEST_URI", "/app"),
            ],
            forced: None,
            exe: "mysite.fcgi",
            script_name: "/app",
            path_info: "",
        },
        Row {
            what: "Apache `ScriptAlias /app /home/u/cgi-bin/mysite.fcgi`, below the root",
            vars: &[
                ("SCRIPT_NAME", "/app"),
                ("PATH_INFO", "/posts/1"),
                ("SCRIPT_FILENAME", "/home/u/cgi-bin/mysite.fcgi"),
                ("REQUEST_URI", "/app/posts/1"),
            ],
            forced: None,
            exe: "mysite.fcgi",
            script_name: "/app",
            path_info: "/posts/1",
        },
        Row {
            what: "nginx stock fastcgi_params: SCRIPT_FILENAME is the docroot plus the path, not our file",
            vars: &[
                ("SCRIPT_NAME", "/app"),
                ("SCRIPT_FILENAME", "/var/www/html/app"),
                ("REQUEST_URI", "/app"),
            ],
            forced: None,
            exe: "mysite.fcgi",
            script_name: "",
            path_info: "/app",
        },
        Row {
            what: "Apache mod_rewrite in .htaccess, `%25XX` before `%23`: cut at the `#` and \
                   decoded twice (/blog/%2541%23?q=1, captured)",
            vars: &[
                ("PATH_INFO", "/A"),
                ("QUERY_STRING", ""),
                ("REDIRECT_QUERY_STRING", "q=1"),
                ("REDIRECT_URL", "/blog/%41#"),
                ("REQUEST_URI", "/blog/%2541%23?q=1"),
                ("SCRIPT_NAME", "/blog/mysite.fcgi"),
            ],
            forced: None,
            exe: "mysite.fcgi",
            script_name: "/blog",
            path_info: "/%41#",
        },
        Row {
            what: "no REQUEST_URI at all (a minimal CGI server)",
            vars: &[("SCRIPT_NAME", "/cgi-bin/mysite.fcgi"), ("PATH_INFO", "/x")],
            forced: None,
            exe: "mysite.fcgi",
            script_name: "/cgi-bin/mysite.fcgi",
            path_info: "/x",
        },
    ];
    for row in &rows {
        check(row);
    }
}

#[test]
fn routes_are_the_same_at_the_root_and_in_a_subdirectory() {
    // The same request through the root .htaccess and the /blog/ one: the app-relative
    // path (what routes match) is identical; only the prefix differs.
    let root = Vars::from_pairs([
        ("REDIRECT_URL", "/posts/1"),
        ("SCRIPT_NAME", "/mysite.fcgi"),
        ("PATH_INFO", "/posts/1"),
        ("REQUEST_URI", "/posts/1"),
    ]);
    let sub = Vars::from_pairs([
        ("REDIRECT_URL", "/blog/posts/1"),
        ("SCRIPT_NAME", "/blog/mysite.fcgi"),
        ("PATH_INFO", "/posts/1"),
        ("REQUEST_URI", "/blog/posts/1"),
    ]);
    let a = rebuild(&root, None, Some("mysite.fcgi"));
    let b = rebuild(&sub, None, Some("mysite.fcgi"));
    assert_eq!(a.path_info, b.path_info);
    assert_eq!(
        (a.script_name.as_str(), b.script_name.as_str()),
        ("", "/blog")
    );
}

/// `PATH_INFO` empty although the request was not for the script's own URL: the request
/// was rewritten to the script with no path after it, or nginx passed the rewritten
/// path as `SCRIPT_NAME`. The app must still see `/blog` + `/posts/1`, not the whole URL
/// as its prefix (which would send every URL to its root handler).
#[test]
fn no_path_info_for_a_request_rewritten_to_the_script() {
    let rows = [
        Row {
            what: "Apache FallbackResource /blog/mysite.fcgi",
            vars: &[
                ("SCRIPT_NAME", "/blog/mysite.fcgi"),
                ("SCRIPT_FILENAME", "/home/u/public_html/blog/mysite.fcgi"),
                ("REQUEST_URI", "/blog/posts/1?x=1"),
            ],
            forced: None,
            exe: "mysite.fcgi",
            script_name: "/blog",
            path_info: "/posts/1",
        },
        Row {
            what: "Apache RewriteRule ^ mysite.fcgi [L] (no /$1)",
            vars: &[
                ("REDIRECT_URL", "/blog/posts/1"),
                ("SCRIPT_URL", "/blog/posts/1"),
                ("SCRIPT_NAME", "/blog/mysite.fcgi"),
                ("REQUEST_URI", "/blog/posts/1"),
            ],
            forced: None,
            exe: "mysite.fcgi",
            script_name: "/blog",
            path_info: "/posts/1",
        },
        Row {
            what: "the same at the site root",
            vars: &[
                ("REDIRECT_URL", "/posts/1"),
                ("SCRIPT_NAME", "/mysite.fcgi"),
                ("REQUEST_URI", "/posts/1"),
            ],
            forced: None,
            exe: "mysite.fcgi",
            script_name: "",
            path_info: "/posts/1",
        },
        Row {
            what: "the folder itself",
            vars: &[
                ("SCRIPT_NAME", "/blog/mysite.fcgi"),
                ("REQUEST_URI", "/blog/"),
            ],
            forced: None,
            exe: "mysite.fcgi",
            script_name: "/blog",
            path_info: "/",
        },
        Row {
            what: "a binary under another name (a symlink): the same rule",
            vars: &[
                ("SCRIPT_NAME", "/blog/mysite.fcgi"),
                ("REQUEST_URI", "/blog/posts/1"),
            ],
            forced: None,
            exe: "app",
            script_name: "/blog",
            path_info: "/posts/1",
        },
        Row {
            what: "rewritten from elsewhere (server config, [PT] to /cgi-bin/): the whole path",
            vars: &[
                ("SCRIPT_URL", "/app/posts/1"),
                ("SCRIPT_NAME", "/cgi-bin/mysite.fcgi"),
                ("REQUEST_URI", "/app/posts/1"),
            ],
            forced: None,
            exe: "mysite.fcgi",
            script_name: "",
            path_info: "/app/posts/1",
        },
        Row {
            what: "FallbackResource with FORCE_SCRIPT_NAME",
            vars: &[
                ("SCRIPT_NAME", "/blog/mysite.fcgi"),
                ("REQUEST_URI", "/blog/posts/1"),
            ],
            forced: Some("/blog"),
            exe: "mysite.fcgi",
            script_name: "/blog",
            path_info: "/posts/1",
        },
        Row {
            what: "nginx `rewrite ^/blog(/.*)$ $1 break;` with the stock fastcgi_params",
            vars: &[
                ("SCRIPT_NAME", "/posts/1"),
                ("SCRIPT_FILENAME", "/srv/www/posts/1"),
                ("PATH_INFO", ""),
                ("REQUEST_URI", "/blog/posts/1?x=1"),
            ],
            forced: None,
            exe: "mysite.fcgi",
            script_name: "/blog",
            path_info: "/posts/1",
        },
        Row {
            what: "the script's own URL stays a script mount",
            vars: &[
                ("REDIRECT_URL", "/blog/mysite.fcgi"),
                ("SCRIPT_NAME", "/blog/mysite.fcgi"),
                ("REQUEST_URI", "/blog/mysite.fcgi?x=1"),
            ],
            forced: None,
            exe: "mysite.fcgi",
            script_name: "/blog/mysite.fcgi",
            path_info: "",
        },
    ];
    for row in &rows {
        check(row);
    }
    let vars = Vars::from_pairs(rows[0].vars.iter().copied());
    let m = rebuild(&vars, None, Some("mysite.fcgi"));
    assert_eq!(m.source, MountSource::ScriptFolder);
    assert_eq!(m.query, None, "QUERY_STRING is right here");
}

/// mod_rewrite in `.htaccess` decodes the rewritten path a second time: `/blog/100%2541`
/// arrives as `PATH_INFO=/100A` (as the real Apache in tests/apache.rs shows). The path
/// is the request's own, decoded once.
#[test]
fn a_path_decoded_twice_by_mod_rewrite_is_repaired_from_request_uri() {
    for (folder, uri, twice, want_prefix, want_path) in [
        ("/blog", "/blog/100%2541", "/100A", "/blog", "/100%41"),
        ("", "/caf%25C3%25A9/x", "/caf\u{e9}/x", "", "/caf%C3%A9/x"),
    ] {
        let script = format!("{folder}/mysite.fcgi");
        let once = fcgi_shim::mount::percent_decode(uri.as_bytes()).into_owned();
        let once = String::from_utf8(once).unwrap();
        let vars = Vars::from_pairs([
            ("REDIRECT_URL", once.as_str()),
            ("SCRIPT_NAME", script.as_str()),
            ("PATH_INFO", twice),
            ("REQUEST_URI", uri),
        ]);
        let m = rebuild(&vars, None, Some("mysite.fcgi"));
        assert_eq!(m.source, MountSource::ScriptFolder, "{uri}");
        assert_eq!(m.script_name, want_prefix, "{uri}");
        assert_eq!(String::from_utf8_lossy(&m.path_info), want_path, "{uri}");
    }
    // A PATH_INFO that is not the request path decoded again (a rule that renames):
    // left alone.
    let vars = Vars::from_pairs([
        ("REDIRECT_URL", "/blog/100%41"),
        ("SCRIPT_NAME", "/blog/mysite.fcgi"),
        ("PATH_INFO", "/other"),
        ("REQUEST_URI", "/blog/100%2541"),
    ]);
    let m = rebuild(&vars, None, Some("mysite.fcgi"));
    assert_eq!(m.source, MountSource::ScriptName);
}

/// `FORCE_SCRIPT_NAME` (the README's fix for odd set-ups) keeps the `%23` repair.
#[test]
fn a_hash_cut_is_repaired_under_a_forced_prefix_too() {
    let vars = Vars::from_pairs([
        ("REDIRECT_URL", "/blog/a#b"),
        ("REDIRECT_QUERY_STRING", "q=1"),
        ("SCRIPT_NAME", "/blog/mysite.fcgi"),
        ("PATH_INFO", "/a"),
        ("QUERY_STRING", ""),
        ("REQUEST_URI", "/blog/a%23b?q=1"),
    ]);
    let m = rebuild(&vars, Some("/blog"), Some("mysite.fcgi"));
    assert_eq!(m.source, MountSource::Forced);
    assert_eq!(m.script_name, "/blog");
    assert_eq!(String::from_utf8_lossy(&m.path_info), "/a#b");
    assert_eq!(m.query.as_deref(), Some(&b"q=1"[..]));
}

/// A `%25XX` before a `%23` in one URL: mod_rewrite cut the rewritten URL at the `#`
/// and decoded what was left a second time, so both repairs must apply at once
/// (`/blog/%2541%23?q=1` gave `PATH_INFO=/A` and no query). The variables are Apache
/// 2.4.71's with htaccess/fcgid-subdir.htaccess in /blog/ and fcgid-root.htaccess at /.
#[test]
fn a_hash_cut_after_a_path_decoded_twice_is_repaired_from_request_uri() {
    let want = |vars: &[(&str, &str)], prefix: &str, path: &str, query: &str| {
        let m = rebuild(
            &Vars::from_pairs(vars.iter().copied()),
            None,
            Some("mysite.fcgi"),
        );
        let what = vars
            .iter()
            .find(|(k, _)| *k == "REQUEST_URI")
            .map(|(_, v)| *v);
        assert_eq!(m.source, MountSource::CutByRewrite, "{what:?}");
        assert_eq!(m.script_name, prefix, "{what:?}");
        assert_eq!(String::from_utf8_lossy(&m.path_info), path, "{what:?}");
        assert_eq!(m.query.as_deref(), Some(query.as_bytes()), "{what:?}");
    };
    want(
        &[
            ("PATH_INFO", "/A"),
            ("QUERY_STRING", ""),
            ("REDIRECT_QUERY_STRING", "q=1"),
            ("REDIRECT_URL", "/blog/%41#"),
            ("REQUEST_URI", "/blog/%2541%23?q=1"),
            ("SCRIPT_NAME", "/blog/mysite.fcgi"),
        ],
        "/blog",
        "/%41#",
        "q=1",
    );
    want(
        &[
            ("PATH_INFO", "/A"),
            ("QUERY_STRING", ""),
            ("REDIRECT_QUERY_STRING", "q=1"),
            ("REDIRECT_URL", "/%41#"),
            ("REQUEST_URI", "/%2541%23?q=1"),
            ("SCRIPT_NAME", "/mysite.fcgi"),
        ],
        "",
        "/%41#",
        "q=1",
    );
    want(
        &[
            ("PATH_INFO", "/aA/b"),
            ("QUERY_STRING", ""),
            ("REDIRECT_QUERY_STRING", "d=%23"),
            ("REDIRECT_URL", "/blog/a%41/b#c"),
            ("REQUEST_URI", "/blog/a%2541/b%23c?d=%23"),
            ("SCRIPT_NAME", "/blog/mysite.fcgi"),
        ],
        "/blog",
        "/a%41/b#c",
        "d=%23",
    );
    // The other order worked before: the `%41` is after the cut.
    want(
        &[
            ("PATH_INFO", "/x"),
            ("QUERY_STRING", ""),
            ("REDIRECT_QUERY_STRING", "q=1"),
            ("REDIRECT_URL", "/blog/x#/%41"),
            ("REQUEST_URI", "/blog/x%23/%2541?q=1"),
            ("SCRIPT_NAME", "/blog/mysite.fcgi"),
        ],
        "/blog",
        "/x#/%41",
        "q=1",
    );
    // A PATH_INFO that is neither the cut path nor the cut path decoded again (a rule
    // that renames): left alone.
    let m = rebuild(
        &Vars::from_pairs([
            ("PATH_INFO", "/B"),
            ("REDIRECT_URL", "/blog/%41#"),
            ("REQUEST_URI", "/blog/%2541%23?q=1"),
            ("SCRIPT_NAME", "/blog/mysite.fcgi"),
        ]),
        None,
        Some("mysite.fcgi"),
    );
    assert_eq!(m.source, MountSource::ScriptName);
    assert_eq!(m.query, None);
}

/// The templates' optional `SetEnv FORCE_SCRIPT_NAME /blog` keeps the repair of a path
/// mod_rewrite decoded twice (`/blog/100%2520off` gave the app `/100 off`), alone and
/// with a `%23` cut. The variables are Apache 2.4.71's with htaccess/fcgid-subdir.htaccess
/// and its `SetEnv` line in /forced/.
#[test]
fn a_path_decoded_twice_is_repaired_under_a_forced_prefix_too() {
    for (uri, twice, redirect_url, redirect_query, path, query) in [
        (
            "/forced/100%2520off",
            "/100 off",
            "/forced/100%20off",
            None,
            "/100%20off",
            None,
        ),
        (
            "/forced/100%2541",
            "/100A",
            "/forced/100%41",
            None,
            "/100%41",
            None,
        ),
        (
            "/forced/%2541%23?q=1",
            "/A",
            "/forced/%41#",
            Some("q=1"),
            "/%41#",
            Some("q=1"),
        ),
        (
            "/forced/a%23b?x=1",
            "/a",
            "/forced/a#b",
            Some("x=1"),
            "/a#b",
            Some("x=1"),
        ),
    ] {
        let mut pairs = vec![
            ("FORCE_SCRIPT_NAME", "/forced"),
            ("PATH_INFO", twice),
            ("QUERY_STRING", ""),
            ("REDIRECT_FORCE_SCRIPT_NAME", "/forced"),
            ("REDIRECT_URL", redirect_url),
            ("REQUEST_URI", uri),
            ("SCRIPT_NAME", "/forced/mysite.fcgi"),
        ];
        if let Some(q) = redirect_query {
            pairs.push(("REDIRECT_QUERY_STRING", q));
        }
        let vars = Vars::from_pairs(pairs.iter().copied());
        let m = rebuild(&vars, None, Some("mysite.fcgi"));
        assert_eq!(m.source, MountSource::Forced, "{uri}");
        assert_eq!(m.script_name, "/forced", "{uri}");
        assert_eq!(String::from_utf8_lossy(&m.path_info), path, "{uri}");
        assert_eq!(m.query.as_deref(), query.map(str::as_bytes), "{uri}");
        // The same prefix from the process settings (no per-request variable).
        let pairs: Vec<_> = pairs
            .into_iter()
            .filter(|(k, _)| !k.contains("FORCE_SCRIPT_NAME"))
            .collect();
        let m = rebuild(
            &Vars::from_pairs(pairs),
            Some("/forced"),
            Some("mysite.fcgi"),
        );
        assert_eq!(
            String::from_utf8_lossy(&m.path_info),
            path,
            "{uri} (process)"
        );
    }
    // A forced prefix that is not the folder: the path is the repaired one.
    let vars = Vars::from_pairs([
        ("PATH_INFO", "/100 off"),
        ("REDIRECT_URL", "/blog/100%20off"),
        ("REQUEST_URI", "/blog/100%2520off"),
        ("SCRIPT_NAME", "/blog/mysite.fcgi"),
    ]);
    let m = rebuild(&vars, Some("/site"), Some("mysite.fcgi"));
    assert_eq!(
        (
            m.script_name.as_str(),
            String::from_utf8_lossy(&m.path_info).as_ref()
        ),
        ("/site", "/100%20off")
    );
    // A server that decoded once (a `%` left that decodes to nothing): PATH_INFO as
    // sent, as without the repair, even under FORCE_SCRIPT_NAME="".
    let vars = Vars::from_pairs([
        ("PATH_INFO", "/100%"),
        ("REQUEST_URI", "/blog/100%25"),
        ("SCRIPT_NAME", "/blog/mysite.fcgi"),
    ]);
    let m = rebuild(&vars, Some(""), Some("mysite.fcgi"));
    assert_eq!(
        (
            m.script_name.as_str(),
            String::from_utf8_lossy(&m.path_info).as_ref()
        ),
        ("", "/100%")
    );
}
