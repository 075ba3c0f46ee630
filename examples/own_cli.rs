// An app with a command line of its own: `own_cli migrate` does a chore and exits;
// otherwise it serves the way it was launched. With `ignore_args`, fcgi-shim leaves
// the command line and the process's exit to the app: started from a terminal, `run`
// returns `Error::NotLaunchedByWebServer` instead of explaining and exiting.

use std::process::ExitCode;

use fcgi_shim::{Body, Builder, Error, RequestExt};
use http::{Request, Response};

fn app(req: Request<Body>) -> Response<String> {
    Response::new(format!("own_cli at {}\n", req.path_for(req.uri().path())))
}

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("migrate") {
        println!("own_cli: nothing to migrate");
        return ExitCode::SUCCESS;
    }
    match Builder::new().ignore_args().run(app) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::NotLaunchedByWebServer) => {
            eprintln!("own_cli: upload me as mysite.fcgi, or run `own_cli migrate`");
            ExitCode::from(3)
        }
        Err(e) => {
            eprintln!("own_cli: {e}");
            ExitCode::FAILURE
        }
    }
}
