//! Small Python servers the tests start (webhook receivers, an OIDC
//! issuer, echo servers): spawned, their first stdout line read (the port or
//! what they announce), killed on drop.
use std::{
    io::BufRead,
    process::{Child, Command, Stdio},
};

/// A running Python helper.
pub struct PyServer {
    child: Child,
    /// The first line it printed.
    pub announced: String,
}

impl PyServer {
    /// Runs `python3 -c script args...` (or a script file when `script`
    /// ends in `.py`) and waits for its first line.
    pub fn start(script: &str, args: &[&str]) -> Self {
        let mut cmd = Command::new("python3");
        if script.ends_with(".py") {
            cmd.arg(script);
        } else {
            cmd.args(["-c", script]);
        }
        let mut child = cmd
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start python helper");
        let mut announced = String::new();
        std::io::BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut announced)
            .expect("read the helper's first line");
        Self {
            child,
            announced: announced.trim().to_owned(),
        }
    }

    /// The announced line as a port number.
    pub fn port(&self) -> u16 {
        self.announced
            .parse()
            .unwrap_or_else(|_| panic!("helper announced {:?}, not a port", self.announced))
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
