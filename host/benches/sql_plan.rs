//! Planning time of the workshop's SQL scripts (parse + plan, in process), printed.
//! Run by `just bench-sql` (or `cargo bench -p rivulet --bench sql_plan`).

use std::path::Path;
use std::time::Instant;

const SCRIPTS: [(&str, &str); 2] = [
    (
        "step5-sql.sql",
        include_str!("../../pipelines/step5-sql.sql"),
    ),
    (
        "sales-per-store.sql",
        include_str!("../../pipelines/sales-per-store.sql"),
    ),
];

fn main() {
    println!("planning time (parse + plan, in process; noisy on a shared machine)");
    for (name, text) in SCRIPTS {
        let mut planned = 0usize;
        // Warm up, then time.
        for _ in 0..200 {
            planned += usize::from(rivulet::sql::plan_script(text, Path::new(name)).is_ok());
        }
        let runs = 2_000u32;
        let started = Instant::now();
        for _ in 0..runs {
            planned += usize::from(rivulet::sql::plan_script(text, Path::new(name)).is_ok());
        }
        let each = started.elapsed() / runs;
        if planned != 2_200 {
            println!("{name}: does not plan");
            continue;
        }
        println!("{name:<22} {:>8.1} µs per plan", each.as_secs_f64() * 1e6);
    }
}
