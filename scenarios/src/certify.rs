//! The certification runner: Gherkin features run by cucumber against the
//! simulated world, one scenario at a time, with per-scenario results, a
//! closing `N passed, N failed` line, JUnit XML and a replay command for
//! every failure.

use crate::steps::{DrlabWorld, SEED};
use cucumber::gherkin::tagexpr::TagOperation;
use cucumber::tag::Ext as _;
use cucumber::World as _;
use futures::FutureExt as _;
use regex::Regex;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// The step every scenario ends with: appended by [`ClosingStep`], so no
/// suite can forget it and no party can keep state unnoticed.
pub const CLOSING_STEP: &str = "no party holds a call, session, transaction or media port";

/// The Gherkin parser with one addition: after the last step of every
/// scenario, [`CLOSING_STEP`].
#[derive(Debug, Default, Clone)]
pub struct ClosingStep(cucumber::parser::Basic);

fn with_closing_step(
    f: cucumber::parser::Result<cucumber::gherkin::Feature>,
) -> cucumber::parser::Result<cucumber::gherkin::Feature> {
    let mut f = f?;
    let close = |s: &mut cucumber::gherkin::Scenario| {
        let mut step = cucumber::gherkin::Step {
            keyword: "Then ".into(),
            ty: cucumber::gherkin::StepType::Then,
            value: CLOSING_STEP.into(),
            docstring: None,
            table: None,
            span: s.span,
            position: s.position,
        };
        if let Some(last) = s.steps.last() {
            step.span = last.span;
            step.position = last.position;
        }
        s.steps.push(step);
    };
    f.scenarios.iter_mut().for_each(close);
    for r in &mut f.rules {
        r.scenarios.iter_mut().for_each(close);
    }
    Ok(f)
}

impl<I: AsRef<std::path::Path>> cucumber::Parser<I> for ClosingStep {
    type Cli = <cucumber::parser::Basic as cucumber::Parser<I>>::Cli;
    type Output = futures::stream::Map<
        <cucumber::parser::Basic as cucumber::Parser<I>>::Output,
        fn(
            cucumber::parser::Result<cucumber::gherkin::Feature>,
        ) -> cucumber::parser::Result<cucumber::gherkin::Feature>,
    >;

    fn parse(self, input: I, cli: Self::Cli) -> Self::Output {
        use futures::StreamExt as _;
        self.0
            .parse(input, cli)
            .map(with_closing_step as fn(_) -> _)
    }
}

/// Where the suites live in the source tree.
pub fn features_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../features"))
}

#[derive(Debug, Clone)]
pub struct Options {
    pub features: PathBuf,
    /// Only scenarios whose name matches.
    pub name: Option<String>,
    /// A tag expression (`@inbound and not @slow`).
    pub tags: Option<String>,
    pub seed: u64,
    /// A progress bar on standard output (for a terminal) instead of a
    /// line per scenario; failures are still printed as they happen.
    pub progress: bool,
    /// The SBC under test.
    pub target: Target,
    /// SIP cores of the reference SBC (`sbc --shards`); with more than
    /// one, traces are checked for form, not against their snapshots
    /// (other Call-IDs).
    pub sbc_shards: usize,
}

/// The tag of the scenarios that also run against an SBC on real sockets
/// (docs/external-sbc.md); the others need the simulated world.
pub const EXTERNAL_TAG: &str = "external";

/// The SBC the suites run against.
#[derive(Debug, Clone, Default)]
pub enum Target {
    /// drlab's reference SBC in the simulated world (every scenario).
    #[default]
    Sim,
    /// The reference `sbc` binary as a process of its own on real sockets
    /// (the `@external` scenarios).
    Process {
        lab: crate::world::real::RealLab,
        program: PathBuf,
    },
    /// An SBC the user runs, registered as `fqdn` (the `@external`
    /// scenarios).
    External {
        lab: crate::world::real::RealLab,
        fqdn: String,
    },
}

impl Target {
    pub fn is_real(&self) -> bool {
        !matches!(self, Target::Sim)
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            features: features_dir(),
            name: None,
            tags: None,
            seed: 1,
            progress: false,
            target: Target::Sim,
            sbc_shards: 1,
        }
    }
}

/// The bar `drlab` draws on a terminal: scenarios (or seeds) done of all,
/// the elapsed time, and what runs now.
pub fn progress_bar(len: usize, unit: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(len as u64),
        indicatif::ProgressDrawTarget::stdout(),
    );
    let template = format!("{{bar:30}} {{pos}}/{{len}} {unit} {{elapsed}}  {{wide_msg}}");
    if let Ok(style) = indicatif::ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioResult {
    pub feature: String,
    pub name: String,
    pub tags: Vec<String>,
    pub passed: bool,
    pub failure: Option<String>,
    /// The Gherkin steps as run (keyword and text).
    pub steps: Vec<String>,
    /// The world's hosts in ladder order, and the SIP messages sent, for
    /// the HTML report's ladder.
    pub hosts: Vec<String>,
    pub messages: Vec<crate::report::LadderMessage>,
    pub trace: Option<String>,
    pub pcap: Option<Vec<u8>>,
    /// What the scenario's media came to in its pcap.
    pub media: crate::pcap::MediaCount,
    /// How much simulated time its world ran, the closing check included.
    pub simulated: std::time::Duration,
}

#[cfg(test)]
impl ScenarioResult {
    /// A result with nothing but its names and outcome, for tests.
    pub(crate) fn outcome(feature: &str, name: &str, failure: Option<&str>) -> Self {
        ScenarioResult {
            feature: feature.into(),
            name: name.into(),
            tags: vec![],
            passed: failure.is_none(),
            failure: failure.map(str::to_string),
            steps: vec![],
            hosts: vec![],
            messages: vec![],
            trace: None,
            pcap: None,
            media: Default::default(),
            simulated: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub seed: u64,
    /// The features folder the run read (the replay command names it).
    pub features: PathBuf,
    pub results: Vec<ScenarioResult>,
    /// Run on real sockets (no seed replays it).
    pub real: bool,
    /// The reference SBC's SIP cores, when more than one (0 or 1: one).
    pub sbc_shards: usize,
    /// Scenarios the filters chose that a real-socket lab cannot run
    /// (feature, scenario): they need the simulated world.
    pub skipped: Vec<(String, String)>,
}

impl Report {
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.passed).count()
    }

    pub fn failed(&self) -> usize {
        self.results.len() - self.passed()
    }

    /// Simulated time over every scenario's world.
    pub fn simulated(&self) -> std::time::Duration {
        self.results.iter().map(|r| r.simulated).sum()
    }

    /// How to run one of its scenarios again: a seed replays a simulated
    /// run exactly; real sockets and the wall clock make no seed replay,
    /// so a real lab's is run again by name.
    pub fn again(&self, name: &str) -> String {
        match self.real {
            true => format!(
                "again: the same drlab certify command with --name {}",
                shell_quote(&exact_name(name))
            ),
            false => {
                let mut line = replay_command(name, self.seed, &self.features);
                if self.sbc_shards > 1 {
                    line.push_str(&format!(" --sbc-shards {}", self.sbc_shards));
                }
                format!("replay: {line}")
            }
        }
    }

    /// The plain closing line CI and people read.
    pub fn summary(&self) -> String {
        format!("{} passed, {} failed", self.passed(), self.failed())
    }
}

/// A file-name-safe form of a scenario name.
pub fn slug(name: &str) -> String {
    let s: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    s.split('_')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("_")
}

/// `s` as one POSIX shell word: single quotes, a `'` inside as `'\''`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The one command that replays a scenario: the same seed, the same
/// features folder (absolute, so it works from any working directory),
/// the scenario's name as an anchored regular expression, all quoted for
/// the shell.
pub fn replay_command(name: &str, seed: u64, features: &std::path::Path) -> String {
    let features = std::fs::canonicalize(features).unwrap_or_else(|_| features.to_path_buf());
    format!(
        "cargo run -p scenarios --bin drlab -- replay --features {} --seed {seed} --scenario {}",
        shell_quote(&features.to_string_lossy()),
        shell_quote(name)
    )
}

/// The `--name` expression that selects exactly the scenario `name`.
pub fn exact_name(name: &str) -> String {
    format!("^{}$", regex::escape(name))
}

/// Check the options before anything runs: a bad regex or tag expression
/// is the user's mistake and is said so.
pub fn validate(opts: &Options) -> Result<(), String> {
    if let Some(n) = &opts.name {
        Regex::new(n)
            .map_err(|e| format!("--name {n:?} is not a valid regular expression: {e}"))?;
    }
    if let Some(t) = &opts.tags {
        TagOperation::from_str(t)
            .map_err(|e| format!("--tags {t:?} is not a tag expression: {e}"))?;
    }
    if !opts.features.is_dir() {
        return Err(format!(
            "no features directory at {}",
            opts.features.display()
        ));
    }
    Ok(())
}

/// Every `.feature` file under `dir`, in sorted order (cucumber reads
/// subfolders too).
fn feature_files(dir: &std::path::Path) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let entries =
            std::fs::read_dir(&d).map_err(|e| format!("cannot read {}: {e}", d.display()))?;
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|x| x == "feature") {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// A step's text with an Examples row put in (`<name>` → the row's value).
fn expand(text: &str, header: &[String], row: &[String]) -> String {
    header.iter().zip(row).fold(text.to_string(), |t, (h, v)| {
        t.replace(&format!("<{h}>"), v)
    })
}

/// The `--name` and `--tags` of a run, compiled.
struct Filter {
    name: Option<Regex>,
    tags: Option<TagOperation>,
    /// Only `@external` scenarios (a real-socket lab).
    external_only: bool,
}

impl Filter {
    fn of(opts: &Options) -> Result<Filter, String> {
        Ok(Filter {
            name: opts
                .name
                .as_deref()
                .map(Regex::new)
                .transpose()
                .map_err(|e| e.to_string())?,
            tags: opts
                .tags
                .as_deref()
                .map(TagOperation::from_str)
                .transpose()
                .map_err(|e| e.to_string())?,
            external_only: opts.target.is_real(),
        })
    }

    /// Whether the filters chose it but the target cannot run it.
    fn skips<'a>(&self, name: &str, tags: impl Iterator<Item = &'a String> + Clone) -> bool {
        self.external_only
            && self.chooses(name, tags.clone())
            && !tags.clone().any(|t| t == EXTERNAL_TAG)
    }

    /// Whether a scenario with this name and these tags (its feature's,
    /// rule's and own) runs.
    fn admits<'a>(&self, name: &str, tags: impl Iterator<Item = &'a String> + Clone) -> bool {
        self.chooses(name, tags.clone())
            && (!self.external_only || tags.clone().any(|t| t == EXTERNAL_TAG))
    }

    fn chooses<'a>(&self, name: &str, tags: impl Iterator<Item = &'a String> + Clone) -> bool {
        self.name.as_ref().is_none_or(|re| re.is_match(name))
            && self.tags.as_ref().is_none_or(|t| t.eval(tags))
    }
}

/// How many scenarios a run with `opts` selects (a Scenario Outline counts
/// once per Examples row), by the same name and tag rules as the run.
pub fn selected(opts: &Options) -> Result<usize, String> {
    let filter = Filter::of(opts)?;
    let mut n = 0;
    for f in feature_files(&opts.features)? {
        let feature =
            cucumber::gherkin::Feature::parse_path(&f, cucumber::gherkin::GherkinEnv::default())
                .map_err(|e| format!("{}: does not parse: {e}", f.display()))?;
        let rules = feature.rules.iter().map(|r| (Some(r), &r.scenarios));
        for (rule, scenarios) in std::iter::once((None, &feature.scenarios)).chain(rules) {
            for sc in scenarios.iter() {
                let base = feature
                    .tags
                    .iter()
                    .chain(rule.iter().flat_map(|r: &&cucumber::gherkin::Rule| &r.tags))
                    .chain(&sc.tags);
                if sc.examples.is_empty() {
                    n += usize::from(filter.admits(&sc.name, base));
                    continue;
                }
                for ex in &sc.examples {
                    if filter.admits(&sc.name, base.clone().chain(&ex.tags)) {
                        n += ex
                            .table
                            .as_ref()
                            .map_or(0, |t| t.rows.len().saturating_sub(1));
                    }
                }
            }
        }
    }
    Ok(n)
}

/// Read every feature before anything runs: one that does not parse and
/// every step no definition matches (or more than one does) is an error
/// naming file and line, all of them at once. cucumber itself would skip
/// an unparsable file and run the rest, and call an undefined step merely
/// "skipped".
pub fn preflight(dir: &std::path::Path) -> Result<usize, Vec<String>> {
    let files = feature_files(dir).map_err(|e| vec![e])?;
    if files.is_empty() {
        return Err(vec![format!("no .feature files in {}", dir.display())]);
    }
    let steps = DrlabWorld::collection();
    let mut errors = Vec::new();
    let mut scenarios = 0;
    for f in &files {
        let feature = match cucumber::gherkin::Feature::parse_path(
            f,
            cucumber::gherkin::GherkinEnv::default(),
        ) {
            Ok(x) => x,
            Err(e) => {
                errors.push(format!("{}: does not parse: {e}", f.display()));
                continue;
            }
        };
        let mut check = |step: &cucumber::gherkin::Step, text: String| {
            let mut probe = step.clone();
            probe.value = text;
            let at = format!("{}:{}", f.display(), step.position.line);
            match steps.find(&probe) {
                Ok(Some(_)) => {}
                Ok(None) => errors.push(format!(
                    "{at}: no step definition matches `{}{}`",
                    step.keyword, probe.value
                )),
                Err(e) => errors.push(format!(
                    "{at}: `{}{}` matches {} step definitions",
                    step.keyword,
                    probe.value,
                    e.possible_matches.len()
                )),
            }
        };
        let backgrounds = feature
            .background
            .iter()
            .chain(feature.rules.iter().filter_map(|r| r.background.as_ref()));
        for b in backgrounds {
            for step in &b.steps {
                check(step, step.value.clone());
            }
        }
        let all = feature
            .scenarios
            .iter()
            .chain(feature.rules.iter().flat_map(|r| &r.scenarios));
        for sc in all {
            scenarios += 1;
            let rows: Vec<(Vec<String>, Vec<String>)> = sc
                .examples
                .iter()
                .filter_map(|e| e.table.as_ref())
                .flat_map(|t| {
                    let header = t.rows.first().cloned().unwrap_or_default();
                    t.rows
                        .iter()
                        .skip(1)
                        .map(move |r| (header.clone(), r.clone()))
                })
                .collect();
            for step in &sc.steps {
                if rows.is_empty() {
                    check(step, step.value.clone());
                }
                for (header, row) in &rows {
                    check(step, expand(&step.value, header, row));
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(scenarios)
    } else {
        Err(errors)
    }
}

/// Run the suite. Must not be called inside an async runtime (turmoil owns its own).
pub async fn run(opts: Options) -> Result<Report, String> {
    validate(&opts)?;
    preflight(&opts.features).map_err(|errors| {
        let n = errors.len();
        let mut text = errors.join("\n");
        let _ = write!(text, "\n{n} problem(s) in the features; nothing was run");
        text
    })?;
    SEED.store(opts.seed, Ordering::Relaxed);
    crate::steps::SBC_SHARDS.store(opts.sbc_shards.max(1), Ordering::Relaxed);
    *crate::steps::TARGET
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = opts.target.clone();
    let beside = opts
        .features
        .parent()
        .map(|p| p.join("tests/snapshots"))
        .filter(|p| p.is_dir())
        // Absolute: insta takes a relative snapshot path as relative to
        // the source file of the assertion, not to the working directory
        // (with `--features features` and INSTA_UPDATE it wrote into
        // scenarios/src/tests/snapshots).
        .map(|p| p.canonicalize().unwrap_or(p));
    *crate::steps::SNAPSHOTS
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = beside;
    let filter = Filter::of(&opts)?;
    let bar = match opts.progress {
        true => Some(progress_bar(selected(&opts)?, "scenarios")),
        false => None,
    };
    let (bar_before, bar_after) = (bar.clone(), bar.clone());
    let results: Arc<Mutex<Vec<ScenarioResult>>> = Arc::default();
    let skipped: Arc<Mutex<std::collections::BTreeSet<(String, String)>>> = Arc::default();
    let skipped_sink = skipped.clone();
    let sink = results.clone();
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // One line per scenario as it ends (our `after` hook), instead of
    // cucumber's step-by-step console: the failures' details come in the
    // closing report, with their replay lines.
    let quiet = cucumber::writer::Basic::new(
        std::io::sink(),
        cucumber::writer::Coloring::Never,
        cucumber::writer::Verbosity::Default,
    );
    DrlabWorld::cucumber::<PathBuf>()
        .with_writer(quiet)
        .with_parser(ClosingStep::default())
        .max_concurrent_scenarios(1)
        .fail_on_skipped()
        .with_cli(cucumber::cli::Opts::<_, _, _, cucumber::cli::Empty>::default())
        .before(move |_feature, _rule, scenario, world| {
            world.scenario = scenario.name.clone();
            if let Some(b) = &bar_before {
                b.set_message(scenario.name.clone());
            }
            async {}.boxed_local()
        })
        .after(move |feature, _rule, scenario, finished, world| {
            let (passed, failure) = match finished {
                cucumber::event::ScenarioFinished::StepPassed => (true, None),
                cucumber::event::ScenarioFinished::StepSkipped => {
                    (false, Some("a step is not defined".to_string()))
                }
                cucumber::event::ScenarioFinished::StepFailed(_, _, err) => {
                    (false, Some(err.to_string()))
                }
                cucumber::event::ScenarioFinished::BeforeHookFailed(_) => {
                    (false, Some("the before hook failed".to_string()))
                }
            };
            let trace = world.as_ref().and_then(|w| w.trace());
            let messages = world
                .as_ref()
                .map(|w| w.ladder_messages())
                .unwrap_or_default();
            let hosts = world
                .as_ref()
                .and_then(|w| w.lab.as_ref())
                .map(|l| l.hosts.clone())
                .unwrap_or_default();
            let steps = scenario
                .steps
                .iter()
                .map(|s| format!("{}{}", s.keyword, s.value))
                .collect();
            let (pcap, media) = match world.as_ref().and_then(|w| w.pcap()) {
                Some((p, count)) => (Some(p), count),
                None => (None, Default::default()),
            };
            let simulated = (world.as_ref())
                .and_then(|w| w.lab.as_ref())
                .map(|l| l.now())
                .unwrap_or_default();
            let tags = feature.tags.iter().chain(&scenario.tags).cloned().collect();
            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
            let mark = if passed { "PASS" } else { "FAIL" };
            let line = format!("[{n}] {mark}  {} / {}", feature.name, scenario.name);
            match &bar_after {
                Some(b) => {
                    if !passed {
                        b.println(line);
                    }
                    b.inc(1);
                }
                None => println!("{line}"),
            }
            if let Ok(mut r) = sink.lock() {
                r.push(ScenarioResult {
                    feature: feature.name.clone(),
                    name: scenario.name.clone(),
                    tags,
                    passed,
                    failure,
                    steps,
                    hosts,
                    messages,
                    trace,
                    pcap,
                    media,
                    simulated,
                });
            }
            // Free the world now, not when cucumber drops its last handle
            // to it (a failed step's event holds one): a real lab's ports,
            // thread and SBC process must be gone before the next
            // scenario binds them.
            if let Some(w) = world {
                w.lab = None;
            }
            async {}.boxed_local()
        })
        .filter_run(opts.features.clone(), move |feature, rule, scenario| {
            let all_tags = feature
                .tags
                .iter()
                .chain(rule.iter().flat_map(|r| &r.tags))
                .chain(&scenario.tags);
            if filter.skips(&scenario.name, all_tags.clone()) {
                if let Ok(mut s) = skipped_sink.lock() {
                    s.insert((feature.name.clone(), scenario.name.clone()));
                }
            }
            filter.admits(&scenario.name, all_tags)
        })
        .await;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let results = results.lock().map(|r| r.clone()).unwrap_or_default();
    let skipped = skipped
        .lock()
        .map(|s| s.iter().cloned().collect())
        .unwrap_or_default();
    Ok(Report {
        seed: opts.seed,
        features: opts.features.clone(),
        results,
        skipped,
        real: opts.target.is_real(),
        sbc_shards: opts.sbc_shards,
    })
}

/// A fresh folder for one run under `out`: `run-0001`, `run-0002`... (the
/// next number after those present), and `out/latest` pointing at it, so
/// no file of an earlier run is mistaken for this one's.
pub fn new_run_dir(out: &std::path::Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(out)?;
    let last = std::fs::read_dir(out)?
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("run-"))
                .and_then(|n| n.parse::<u32>().ok())
        })
        .max()
        .unwrap_or(0);
    let dir = out.join(format!("run-{:04}", last + 1));
    std::fs::create_dir(&dir)?;
    let latest = out.join("latest");
    let _ = std::fs::remove_file(&latest);
    #[cfg(unix)]
    let _ = std::os::unix::fs::symlink(dir.file_name().unwrap_or_default(), &latest);
    Ok(dir)
}

/// Write what a run produced under `dir`: `junit.xml`, and per scenario
/// `traces/<scenario>.txt` (the ladder) and `traces/<scenario>.pcap`.
/// Returns the files written.
pub fn write_outputs(report: &Report, dir: &std::path::Path) -> std::io::Result<Vec<PathBuf>> {
    let traces = dir.join("traces");
    std::fs::create_dir_all(&traces)?;
    let mut written = Vec::new();
    let junit = dir.join("junit.xml");
    std::fs::write(&junit, junit_xml(report))?;
    written.push(junit);
    let html = dir.join("report.html");
    std::fs::write(&html, crate::report::html(report))?;
    written.push(html);
    for r in &report.results {
        if let Some(t) = &r.trace {
            let p = traces.join(format!("{}.txt", slug(&r.name)));
            std::fs::write(&p, t)?;
            written.push(p);
        }
        if let Some(pcap) = &r.pcap {
            let p = traces.join(format!("{}.pcap", slug(&r.name)));
            std::fs::write(&p, pcap)?;
            written.push(p);
        }
    }
    Ok(written)
}

/// Every feature and scenario under `dir`, with tags, sorted by file.
pub fn list(dir: &std::path::Path) -> Result<String, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "feature"))
        .collect();
    files.sort();
    let mut out = String::new();
    for f in files {
        let feature =
            cucumber::gherkin::Feature::parse_path(&f, cucumber::gherkin::GherkinEnv::default())
                .map_err(|e| format!("{}: {e}", f.display()))?;
        let tags = |t: &[String]| t.iter().map(|t| format!(" @{t}")).collect::<String>();
        let _ = writeln!(
            out,
            "{}{}  ({})",
            feature.name,
            tags(&feature.tags),
            f.file_name().unwrap_or_default().to_string_lossy()
        );
        for s in feature
            .scenarios
            .iter()
            .chain(feature.rules.iter().flat_map(|r| &r.scenarios))
        {
            let _ = writeln!(out, "  {}{}", s.name, tags(&s.tags));
        }
    }
    Ok(out)
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// JUnit XML for CI systems: one testsuite per feature.
pub fn junit_xml(report: &Report) -> String {
    let mut features: Vec<&str> = Vec::new();
    for r in &report.results {
        if !features.contains(&r.feature.as_str()) {
            features.push(&r.feature);
        }
    }
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"drlab certify\" tests=\"{}\" failures=\"{}\" skipped=\"{}\">",
        report.results.len() + report.skipped.len(),
        report.failed(),
        report.skipped.len()
    );
    if !report.skipped.is_empty() {
        // What a real-socket lab could not run, so a CI dashboard shows
        // it as skipped rather than as absent.
        let _ = writeln!(
            out,
            "  <testsuite name=\"not run: needs the simulated world\" tests=\"{n}\" failures=\"0\" skipped=\"{n}\">",
            n = report.skipped.len()
        );
        for (feature, name) in &report.skipped {
            let _ = writeln!(
                out,
                "    <testcase classname=\"{}\" name=\"{}\"><skipped message=\"needs the simulated world (not tagged @{EXTERNAL_TAG})\"/></testcase>",
                xml_escape(feature),
                xml_escape(name)
            );
        }
        out.push_str("  </testsuite>\n");
    }
    for f in features {
        let cases: Vec<&ScenarioResult> =
            report.results.iter().filter(|r| r.feature == f).collect();
        let failures = cases.iter().filter(|r| !r.passed).count();
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\">",
            xml_escape(f),
            cases.len(),
            failures
        );
        for c in cases {
            let _ = write!(
                out,
                "    <testcase classname=\"{}\" name=\"{}\"",
                xml_escape(f),
                xml_escape(&c.name)
            );
            match &c.failure {
                None => out.push_str("/>\n"),
                Some(msg) => {
                    let _ = writeln!(out, ">");
                    let _ = writeln!(
                        out,
                        "      <failure message=\"{}\">{}</failure>",
                        xml_escape(msg.lines().next().unwrap_or_default()),
                        xml_escape(msg)
                    );
                    let _ = writeln!(
                        out,
                        "      <system-out>{}</system-out>",
                        xml_escape(&report.again(&c.name))
                    );
                    out.push_str("    </testcase>\n");
                }
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

/// Each failure with what went wrong and its replay command, and the
/// closing line (the run printed a line per scenario as it ended).
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    for r in report.results.iter().filter(|r| !r.passed) {
        let _ = writeln!(out, "\nFAILED: {} / {}", r.feature, r.name);
        if let Some(f) = &r.failure {
            for l in f.lines() {
                let _ = writeln!(out, "  {l}");
            }
        }
        let _ = writeln!(out, "  {}", report.again(&r.name));
    }
    if !report.skipped.is_empty() {
        let _ = writeln!(
            out,
            "\nnot run: {} scenario(s) the filters chose need the simulated world \
             (only @{EXTERNAL_TAG} scenarios run against an SBC on real sockets):",
            report.skipped.len()
        );
        for (feature, name) in &report.skipped {
            let _ = writeln!(out, "  {feature} / {name}");
        }
    }
    let _ = writeln!(out, "\n{}", report.summary());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_and_replay_commands() {
        assert_eq!(
            slug("A PSTN caller reaches a Teams user"),
            "a_pstn_caller_reaches_a_teams_user"
        );
        assert_eq!(
            replay_command("Inbound (a+b)", 7, std::path::Path::new("/nonexistent/f")),
            "cargo run -p scenarios --bin drlab -- replay --features '/nonexistent/f' --seed 7 --scenario 'Inbound (a+b)'"
        );
        assert_eq!(exact_name("Inbound (a+b)"), "^Inbound \\(a\\+b\\)$");
        // A quote in a name cannot end the shell word early.
        assert_eq!(shell_quote("A caller's call"), "'A caller'\\''s call'");
        let cmd = replay_command("A caller's call", 1, std::path::Path::new("/f"));
        assert!(cmd.ends_with("--scenario 'A caller'\\''s call'"), "{cmd}");
    }

    #[test]
    fn the_suites_pass_preflight() {
        let n = preflight(&features_dir()).unwrap();
        assert!(n > 50, "{n} scenarios");
    }

    #[test]
    fn preflight_names_every_unparsable_file_and_undefined_step() {
        let dir = std::env::temp_dir().join(format!("drlab-preflight-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(
            dir.join("broken.feature"),
            "Feature: x\n  Scenario\n    Given\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("sub/undefined.feature"),
            "Feature: y\n\n  Scenario: z\n    Given the SBC is registered in the tenant as sbc.example.com\n    When the moon rises\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("outline.feature"),
            "Feature: o\n\n  Scenario Outline: p\n    When the PSTN caller puts the call on hold with <how>\n\n    Examples:\n      | how |\n      | a=sendonly |\n      | a=whatever |\n",
        )
        .unwrap();
        let errors = preflight(&dir).unwrap_err();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(errors.len(), 3, "{errors:#?}");
        assert!(errors
            .iter()
            .any(|e| e.contains("broken.feature: does not parse")));
        assert!(errors.iter().any(
            |e| e.contains("undefined.feature:5: no step definition matches `When the moon rises`")
        ));
        assert!(errors
            .iter()
            .any(|e| e.contains("outline.feature:4:") && e.contains("a=whatever")));
    }

    /// The progress bar's length: what the filters select, an outline once
    /// per Examples row (tagged Examples by their tags too).
    #[test]
    fn selected_counts_what_the_filters_let_through() {
        let dir = std::env::temp_dir().join(format!("drlab-selected-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("a.feature"),
            "@calls\nFeature: A\n\n  @in\n  Scenario: one\n    Given x\n\n  \
             Scenario Outline: many <n>\n    Given <n>\n\n    Examples:\n      | n |\n      | 1 |\n      | 2 |\n\n    \
             @slow\n    Examples:\n      | n |\n      | 3 |\n\n  Rule: r\n\n    @in\n    Scenario: ruled\n      Given y\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("b.feature"),
            "Feature: B\n\n  Scenario: two\n    Given z\n",
        )
        .unwrap();
        let count = |name: Option<&str>, tags: Option<&str>| {
            selected(&Options {
                features: dir.clone(),
                name: name.map(String::from),
                tags: tags.map(String::from),
                ..Options::default()
            })
            .unwrap()
        };
        let all = count(None, None);
        let tagged_in = count(None, Some("@in"));
        let not_slow = count(None, Some("not @slow"));
        let calls = count(None, Some("@calls"));
        let named = count(Some("^many"), None);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(all, 6);
        assert_eq!(tagged_in, 2);
        assert_eq!(not_slow, 5);
        assert_eq!(calls, 5);
        assert_eq!(named, 3);
    }

    #[test]
    fn bad_filters_are_refused_with_the_flag_named() {
        let o = Options {
            name: Some("(".into()),
            ..Options::default()
        };
        assert!(validate(&o).unwrap_err().starts_with("--name"));
        let o = Options {
            tags: Some("@a and and".into()),
            ..Options::default()
        };
        assert!(validate(&o).unwrap_err().starts_with("--tags"));
    }

    #[test]
    fn junit_marks_failures_with_their_replay() {
        let report = Report {
            seed: 3,
            features: PathBuf::from("/f"),
            results: vec![
                ScenarioResult::outcome("F", "ok", None),
                ScenarioResult::outcome("F", "bad <x>", Some("expected 200")),
            ],
            skipped: vec![("G".into(), "sim <only>".into())],
            real: false,
            sbc_shards: 1,
        };
        let xml = junit_xml(&report);
        assert!(
            xml.contains("<testcase classname=\"G\" name=\"sim &lt;only&gt;\"><skipped message=")
        );
        assert!(render(&report).contains("not run: 1 scenario(s)"));
        assert!(render(&report).contains("  replay: "));
        let real = Report {
            real: true,
            ..report.clone()
        };
        // No seed replays a real lab's run: the line says how to run it again.
        assert!(render(&real)
            .contains("  again: the same drlab certify command with --name '^bad <x>$'"));
        assert!(!render(&real).contains("replay:"));
        assert!(junit_xml(&real).contains("<system-out>again: the same drlab certify command"));
        // The whole run's counts: the skipped one included.
        assert!(xml.contains(
            "<testsuites name=\"drlab certify\" tests=\"3\" failures=\"1\" skipped=\"1\">"
        ));
        assert!(xml.contains("tests=\"2\" failures=\"1\""));
        assert!(xml.contains("name=\"bad &lt;x&gt;\""));
        assert!(xml.contains("--seed 3"));
        assert!(!xml.contains("--sbc-shards"));
        assert!(render(&report).ends_with("1 passed, 1 failed\n"));
        // A run on several SBC cores replays on as many.
        let cores = Report {
            sbc_shards: 3,
            ..report.clone()
        };
        assert!(render(&cores).contains("--scenario 'bad <x>' --sbc-shards 3"));
    }
}
