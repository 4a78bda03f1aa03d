//! `rivulet sql` without `-f`: the interactive SQL client. Statements end with `;` and may
//! span lines; history is kept in the user's cache folder. DDL, SET, SHOW TABLES and
//! DESCRIBE act at once; `INSERT` starts a job in the background (SHOW JOBS lists them,
//! STOP JOB 'name' stops one); `EXPLAIN ...` prints the job graph; a `SELECT` runs in the
//! foreground and prints its rows as they come, Flink's TABLEAU way, until its input ends
//! or Ctrl-C (which stops the query, not the client). Statements may come from a pipe.

use super::sql::SqlArgs;
use anyhow::Context;
use rivulet::assemble::RunOptions;
use rivulet::spec::{PipelineSpec, SinkSpec};
use rivulet::sql::SqlJob;
use rivulet::sql::plan::{Outcome, apply_settings};
use rivulet::sql::session::Session;
use rivulet::task::Job;
use rivulet::udf::{ModuleCache, Runtime};
use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// A job started by an INSERT.
struct Background {
    name: String,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<(), String>>>,
    outcome: Option<String>,
}

struct Client<'a> {
    args: &'a SqlArgs,
    session: Session,
    runtime: Runtime,
    jobs: Vec<Background>,
    queries: usize,
}

pub fn run(args: &SqlArgs) -> anyhow::Result<()> {
    let mut client = Client {
        args,
        session: Session::new(Path::new("./client.sql")),
        runtime: Runtime::new(ModuleCache::default_location())?,
        jobs: Vec::new(),
        queries: 0,
    };
    if std::io::stdin().is_terminal() {
        interactive(&mut client)?;
    } else {
        let mut buffer = String::new();
        for line in std::io::stdin().lock().lines() {
            let line = line.context("reading standard input")?;
            buffer.push_str(&line);
            buffer.push('\n');
            if line.trim_end().ends_with(';') {
                let text = std::mem::take(&mut buffer);
                if !client.statement(&text) {
                    return client.finish();
                }
            }
        }
        if !buffer.trim().is_empty() {
            client.statement(&buffer);
        }
    }
    client.finish()
}

fn history_file() -> Option<PathBuf> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    let dir = cache.join("rivulet");
    std::fs::create_dir_all(&dir).ok()?;
    Some(dir.join("sql_history"))
}

fn interactive(client: &mut Client<'_>) -> anyhow::Result<()> {
    use rustyline::error::ReadlineError;
    let mut editor = rustyline::DefaultEditor::new()?;
    let history = history_file();
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    println!(
        "rivulet SQL client: statements end with `;`. HELP; lists what it takes, QUIT; leaves."
    );
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() {
            "rivulet> "
        } else {
            "       > "
        };
        match editor.readline(prompt) {
            Ok(line) => {
                buffer.push_str(&line);
                buffer.push('\n');
                if line.trim_end().ends_with(';') {
                    let text = std::mem::take(&mut buffer);
                    let _ = editor.add_history_entry(text.trim());
                    if let Some(path) = &history {
                        let _ = editor.save_history(path);
                    }
                    if !client.statement(&text) {
                        break;
                    }
                }
            }
            // Ctrl-C at the prompt drops the statement being typed.
            Err(ReadlineError::Interrupted) => buffer.clear(),
            Err(ReadlineError::Eof) => break,
            Err(err) => return Err(err.into()),
        }
    }
    Ok(())
}

impl Client<'_> {
    /// Runs one statement's text; false to leave the client.
    fn statement(&mut self, text: &str) -> bool {
        let words: Vec<String> = text
            .trim()
            .trim_end_matches(';')
            .split_whitespace()
            .map(str::to_ascii_uppercase)
            .collect();
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        match words.as_slice() {
            [] => return true,
            ["QUIT"] | ["EXIT"] => return false,
            ["HELP"] => {
                println!(
                    "CREATE TABLE / FUNCTION, DROP TABLE / FUNCTION, SET, SHOW TABLES, SHOW FUNCTIONS, DESCRIBE t,"
                );
                println!(
                    "INSERT INTO ... SELECT (a job in the background), BEGIN STATEMENT SET; ... END;,"
                );
                println!(
                    "SELECT ... (rows as they come; Ctrl-C stops it), EXPLAIN INSERT/SELECT ..., SHOW JOBS, STOP JOB 'name', QUIT"
                );
                return true;
            }
            ["SHOW", "JOBS"] => {
                self.show_jobs();
                return true;
            }
            ["STOP", "JOB", _] => {
                let name = text
                    .trim()
                    .trim_end_matches(';')
                    .split_whitespace()
                    .nth(2)
                    .unwrap_or_default();
                self.stop_job(name.trim_matches(['\'', '"']));
                return true;
            }
            _ => {}
        }
        let statements = match rivulet::sql::parse::parse_script(text) {
            Ok(statements) => statements,
            Err(err) => {
                println!("[ERROR] {err}");
                return true;
            }
        };
        for statement in statements {
            let outcome = self.session.execute(statement);
            for note in self.session.take_notes() {
                println!("[NOTE] {note}");
            }
            match outcome {
                Ok(Outcome::Nothing) => println!("[INFO] Execute statement succeeded."),
                Ok(Outcome::Text(text)) => print!("{text}"),
                Ok(Outcome::Jobs { specs, explain }) => {
                    for spec in specs {
                        match self.prepare(spec) {
                            Ok(spec) if explain => self.explain(spec),
                            Ok(spec) => self.start(spec),
                            Err(err) => println!("[ERROR] {err}"),
                        }
                    }
                }
                Ok(Outcome::Query {
                    spec,
                    columns,
                    explain,
                    ..
                }) => match self.prepare(*spec) {
                    Ok(spec) if explain => self.explain(spec),
                    Ok(spec) => {
                        if let Err(err) = self.query(spec, &columns) {
                            println!("[ERROR] {err:#}");
                        }
                    }
                    Err(err) => println!("[ERROR] {err}"),
                },
                Err(err) => println!("[ERROR] {err}"),
            }
        }
        let _ = std::io::stdout().flush();
        true
    }

    /// The session's settings applied, the command line's parallelism, checked.
    fn prepare(&self, mut spec: PipelineSpec) -> Result<PipelineSpec, String> {
        let settings = self.session.settings().to_vec();
        apply_settings(&mut spec, &settings, &mut Vec::new()).map_err(|e| e.to_string())?;
        if self.args.parallelism.is_some() {
            spec.parallelism = self.args.parallelism;
        }
        Ok(spec)
    }

    fn explain(&self, spec: PipelineSpec) {
        let tasks = spec
            .parallelism
            .unwrap_or_else(rivulet::assemble::default_parallelism)
            .max(1);
        let job = SqlJob {
            spec,
            also: Vec::new(),
            explain: true,
            notes: Vec::new(),
            printed: Vec::new(),
            warnings: Vec::new(),
        };
        print!("{}", rivulet::sql::explain::explain(&job, tasks));
    }

    fn options(&self, stop: Arc<AtomicBool>) -> RunOptions {
        RunOptions {
            brokers: self.args.kafka.brokers.clone(),
            runtime: self.runtime.clone(),
            stop,
            connect_timeout: self.args.kafka.connect_timeout,
            commit_every: self.args.commit_every,
            swappable: false,
            instance: Default::default(),
        }
    }

    /// Starts an INSERT's job in the background.
    fn start(&mut self, mut spec: PipelineSpec) {
        let mut name = spec.name.clone();
        let mut n = 2;
        while self.jobs.iter().any(|j| j.name == name) {
            name = format!("{}-{n}", spec.name);
            n += 1;
        }
        spec.name = name.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let mut job = match Job::from_spec(&spec, &self.options(stop.clone())) {
            Ok(job) => job,
            Err(err) => {
                println!("[ERROR] the job does not start: {err}");
                return;
            }
        };
        let handle = std::thread::spawn(move || job.run().map_err(|e| e.to_string()));
        println!(
            "[INFO] Job '{name}' runs in the background. SHOW JOBS; lists the jobs, STOP JOB '{name}'; stops it."
        );
        self.jobs.push(Background {
            name,
            stop,
            handle: Some(handle),
            outcome: None,
        });
    }

    fn reap(&mut self) {
        for job in &mut self.jobs {
            if job.handle.as_ref().is_some_and(JoinHandle::is_finished)
                && let Some(handle) = job.handle.take()
            {
                job.outcome = Some(match handle.join() {
                    Ok(Ok(())) => "FINISHED".to_owned(),
                    Ok(Err(err)) => format!("FAILED: {err}"),
                    Err(_) => "FAILED: the job's thread panicked".to_owned(),
                });
            }
        }
    }

    fn show_jobs(&mut self) {
        self.reap();
        let rows = self
            .jobs
            .iter()
            .map(|j| {
                let status = match (&j.outcome, j.stop.load(Ordering::Relaxed)) {
                    (Some(outcome), _) => outcome.clone(),
                    (None, true) => "STOPPING".to_owned(),
                    (None, false) => "RUNNING".to_owned(),
                };
                vec![j.name.clone(), status]
            })
            .collect();
        print!(
            "{}",
            rivulet::sql::session::table_text(&["job name", "status"], rows)
        );
    }

    fn stop_job(&mut self, name: &str) {
        match self.jobs.iter_mut().find(|j| j.name == name) {
            Some(job) => {
                job.stop.store(true, Ordering::Relaxed);
                if let Some(handle) = job.handle.take() {
                    let _ = handle.join();
                }
                job.outcome = Some("STOPPED".to_owned());
                println!("[INFO] Job '{name}' stopped.");
            }
            None => println!("[ERROR] no job '{name}' (SHOW JOBS; lists them)"),
        }
    }

    /// Runs a SELECT in the foreground, printing its rows as they come.
    fn query(&mut self, mut spec: PipelineSpec, columns: &[String]) -> anyhow::Result<()> {
        self.queries += 1;
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("rows.jsonl");
        std::fs::write(&path, "")?;
        spec.name = format!("query-{}", self.queries);
        spec.sink = SinkSpec::File { path: path.clone() };
        let stop = Arc::new(AtomicBool::new(false));
        // Ctrl-C stops the query, not the client, while it runs.
        let signal = signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
        let started = Job::from_spec(&spec, &self.options(stop.clone()));
        let mut job = match started {
            Ok(job) => job,
            Err(err) => {
                signal_hook::low_level::unregister(signal);
                anyhow::bail!("the query does not start: {err}");
            }
        };
        let handle = std::thread::spawn(move || job.run().map_err(|e| e.to_string()));
        let mut tableau = Tableau::new(columns);
        tableau.header();
        let mut file = std::fs::File::open(&path)?;
        let mut pending = String::new();
        let mut done = false;
        while !done {
            done = handle.is_finished();
            let mut chunk = String::new();
            file.read_to_string(&mut chunk)?;
            pending.push_str(&chunk);
            while let Some(end) = pending.find('\n') {
                let line: String = pending.drain(..=end).collect();
                tableau.row(line.trim_end());
            }
            if !done {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        signal_hook::low_level::unregister(signal);
        let result = handle
            .join()
            .unwrap_or_else(|_| Err("the query's thread panicked".to_owned()));
        tableau.footer();
        if let Err(err) = result
            && !stop.load(Ordering::Relaxed)
        {
            anyhow::bail!("the query failed: {err}");
        }
        Ok(())
    }

    /// At the end of the input: background jobs run to their end (Ctrl-C stops them).
    fn finish(mut self) -> anyhow::Result<()> {
        self.reap();
        let running: Vec<&Background> = self.jobs.iter().filter(|j| j.handle.is_some()).collect();
        if running.is_empty() {
            return Ok(());
        }
        eprintln!(
            "[INFO] waiting for {} background job(s) to end (Ctrl-C stops them)",
            running.len()
        );
        let stop = Arc::new(AtomicBool::new(false));
        let signal = signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
        for job in &mut self.jobs {
            let Some(handle) = job.handle.take() else {
                continue;
            };
            while !handle.is_finished() {
                if stop.load(Ordering::Relaxed) {
                    job.stop.store(true, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            match handle.join() {
                Ok(Ok(())) => {}
                Ok(Err(err)) => eprintln!("[ERROR] job '{}' failed: {err}", job.name),
                Err(_) => eprintln!("[ERROR] job '{}' panicked", job.name),
            }
        }
        signal_hook::low_level::unregister(signal);
        Ok(())
    }
}

/// Rows as Flink's TABLEAU result mode prints them: a header, then one line per row as it
/// comes (`+I`: an insertion), then the count.
struct Tableau<'a> {
    columns: &'a [String],
    widths: Vec<usize>,
    rows: u64,
}

impl<'a> Tableau<'a> {
    fn new(columns: &'a [String]) -> Self {
        Tableau {
            columns,
            widths: columns.iter().map(|c| c.chars().count().max(12)).collect(),
            rows: 0,
        }
    }

    fn line(&self) {
        let mut out = String::from("+----+");
        for w in &self.widths {
            out.push_str(&"-".repeat(w + 2));
            out.push('+');
        }
        println!("{out}");
    }

    fn cells(&self, op: &str, cells: &[String]) {
        let mut out = format!("| {op} |");
        for (w, cell) in self.widths.iter().zip(cells) {
            let cell = if cell.chars().count() > *w {
                let cut: String = cell.chars().take(w.saturating_sub(3)).collect();
                format!("{cut}...")
            } else {
                cell.clone()
            };
            out.push_str(&format!(" {cell:>w$} |"));
        }
        println!("{out}");
        let _ = std::io::stdout().flush();
    }

    fn header(&self) {
        self.line();
        self.cells("op", self.columns);
        self.line();
    }

    fn row(&mut self, line: &str) {
        let Ok(serde_json::Value::Object(row)) = serde_json::from_str::<serde_json::Value>(line)
        else {
            return;
        };
        let cells: Vec<String> = self
            .columns
            .iter()
            .map(|c| match row.get(c) {
                None | Some(serde_json::Value::Null) => "<NULL>".to_owned(),
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            })
            .collect();
        self.rows += 1;
        self.cells("+I", &cells);
    }

    fn footer(&self) {
        self.line();
        println!(
            "Received a total of {} row{}",
            self.rows,
            if self.rows == 1 { "" } else { "s" }
        );
    }
}
