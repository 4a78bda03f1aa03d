//! `rivulet reset <job>`: starts a job over on Kafka — deletes its internal topics (partials,
//! control, restart state) and its consumer groups' committed offsets, so its next run reads
//! its input again from the spec's `start`.

use anyhow::Context;
use clap::Args;
use rivulet::kafka::KafkaConfig;
use rivulet::kafka::admin::{self, Deleted};

#[derive(Debug, Args)]
pub struct ResetArgs {
    /// The job: its name, or its spec file.
    job: String,
    /// Kafka (default: the spec's, else the workshop's).
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS")]
    brokers: Option<String>,
    /// The job's consumer group (default: the spec's, else what its processes said on the
    /// control topic, else `rivulet-<job>`).
    #[arg(long)]
    group: Option<String>,
    /// Reset even though processes of the job seem alive.
    #[arg(long)]
    force: bool,
}

pub fn run(args: ResetArgs) -> anyhow::Result<()> {
    let path = std::path::Path::new(&args.job);
    let spec = if path.is_file() {
        Some(rivulet::spec::PipelineSpec::load(path)?)
    } else {
        None
    };
    let job = spec.as_ref().map_or(args.job.clone(), |s| s.name.clone());
    let brokers = args
        .brokers
        .clone()
        .or_else(|| spec.as_ref().and_then(|s| s.kafka.brokers.clone()))
        .unwrap_or_else(|| rivulet::assemble::DEFAULT_BROKERS.to_owned());
    let kafka = KafkaConfig::new(&brokers);
    if admin::embedded(&kafka)? {
        anyhow::bail!(
            "the broker at {brokers} is the embedded one (`rivulet broker`): it keeps everything in memory and takes no admin requests; restart it to start job `{job}` over"
        );
    }
    let members = rivulet::fleet::members(&kafka, &job)
        .with_context(|| format!("reading the control topic of job `{job}`"))?;
    let alive: Vec<&str> = members
        .iter()
        .filter(|m| m.alive)
        .map(|m| m.heartbeat.id.as_str())
        .collect();
    if !alive.is_empty() && !args.force {
        anyhow::bail!(
            "job `{job}` is running on {} process(es) ({}): stop them first (or pass --force)",
            alive.len(),
            alive.join(", ")
        );
    }
    let group = args
        .group
        .clone()
        .or_else(|| {
            spec.as_ref().and_then(|s| match &s.source {
                rivulet::spec::SourceSpec::Kafka { group, .. } => group.clone(),
                _ => None,
            })
        })
        .or_else(|| members.first().map(|m| m.heartbeat.spec.group.clone()))
        .unwrap_or_else(|| format!("rivulet-{job}"));
    let merge = format!("{group}-merge");
    use rivulet::kafka::state_topic::topic_name;
    let topics = vec![
        rivulet::cluster::topics::partials_topic(&job),
        rivulet::fleet::control_topic(&job),
        topic_name(&group),
        topic_name(&merge),
    ];
    let mut failed = 0;
    let mut report = |what: &str, outcome: Vec<(String, Deleted)>| {
        for (name, deleted) in outcome {
            match deleted {
                Deleted::Deleted => println!("deleted {what} {name}"),
                Deleted::Absent => println!("no {what} {name}"),
                Deleted::Failed(reason) => {
                    failed += 1;
                    println!("cannot delete {what} {name}: {reason}");
                }
            }
        }
    };
    report("topic", admin::delete_topics(&kafka, &topics)?);
    report(
        "consumer group",
        admin::delete_groups(&kafka, &[group, merge])?,
    );
    anyhow::ensure!(
        failed == 0,
        "job `{job}` was not reset completely ({failed} failure(s) above)"
    );
    println!(
        "job `{job}` starts over on its next run (its input is read again from the spec's `start`)"
    );
    Ok(())
}
