//! `apo consensus votes`: aggregate `task,worker,label` votes (crowd-kit's CSV layout).

use std::io::{BufRead, Write};

use apo_consensus::{
    Consensus, DawidSkeneConfig, Method, Votes, dawid_skene, majority_vote, weighted_vote,
};

fn records(input: impl BufRead, what: &str, columns: &[&str]) -> Result<Vec<Vec<String>>, String> {
    let mut reader = csv::ReaderBuilder::new().from_reader(input);
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| format!("{what}: {e}"))?
        .iter()
        .map(|h| h.trim().to_owned())
        .collect();
    let idx: Vec<usize> = columns
        .iter()
        .map(|c| {
            headers.iter().position(|h| h == c).ok_or_else(|| {
                format!(
                    "{what}: missing column `{c}` (header: {})",
                    headers.join(",")
                )
            })
        })
        .collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    for (i, rec) in reader.records().enumerate() {
        let rec = rec.map_err(|e| format!("{what} line {}: malformed row: {e}", i + 2))?;
        if rec.len() != headers.len() {
            return Err(format!(
                "{what} line {}: {} fields, the header has {}",
                i + 2,
                rec.len(),
                headers.len()
            ));
        }
        out.push(idx.iter().map(|&j| rec[j].to_owned()).collect());
    }
    Ok(out)
}

/// Reads a `worker,weight` CSV.
///
/// # Errors
/// Malformed rows and weights that are not numbers, naming the line.
pub fn read_weights(input: impl BufRead) -> Result<Vec<(String, f64)>, String> {
    records(input, "weights", &["worker", "weight"])?
        .iter()
        .enumerate()
        .map(|(i, r)| {
            r[1].trim()
                .parse::<f64>()
                .map(|v| (r[0].clone(), v))
                .map_err(|_| format!("weights line {}: `{}` is not a number", i + 2, r[1]))
        })
        .collect()
}

/// Reads votes, aggregates them and writes `task,label,confidence` CSV.
///
/// # Errors
/// Malformed CSV (naming the line), typed consensus errors (naming the row: row N is CSV
/// line N + 1), bad weights.
pub fn votes(
    method: Method,
    input: impl BufRead,
    weights: Option<impl BufRead>,
    mut out: impl Write,
) -> Result<Vec<Consensus>, String> {
    let rows = records(input, "votes", &["task", "worker", "label"])?;
    let votes = Votes::from_triples(
        rows.iter()
            .map(|r| (r[0].as_str(), r[1].as_str(), r[2].as_str())),
    )
    .map_err(|e| format!("votes: {e} (row N is CSV line N + 1)"))?;
    let result = match method {
        Method::Majority => majority_vote(&votes),
        Method::DawidSkene => {
            dawid_skene(&votes, &DawidSkeneConfig::default())
                .map_err(|e| e.to_string())?
                .consensus
        }
        Method::Weighted => {
            let parsed = match weights {
                Some(r) => read_weights(r)?,
                None => apo_consensus::reliability_weights(&votes),
            };
            let pairs: Vec<(&str, f64)> = parsed.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            weighted_vote(&votes, &pairs).map_err(|e| e.to_string())?
        }
    };
    let io = |e: std::io::Error| e.to_string();
    writeln!(out, "task,label,confidence").map_err(io)?;
    for c in &result {
        writeln!(
            out,
            "{},{},{}",
            votes.tasks()[c.task],
            votes.label_name(c.label),
            c.confidence
        )
        .map_err(io)?;
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_csv_and_reports_bad_input() {
        let input = "task,worker,label\nt1,a,x\nt1,b,x\nt1,c,y\n";
        let mut out = Vec::new();
        votes(Method::Majority, input.as_bytes(), None::<&[u8]>, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("task,label,confidence\nt1,x,0.666"),
            "{text}"
        );
        let err = votes(
            Method::Majority,
            "task,who,label\n".as_bytes(),
            None::<&[u8]>,
            Vec::new(),
        )
        .unwrap_err();
        assert!(err.contains("missing column `worker`"), "{err}");
        let err = votes(
            Method::Majority,
            "task,worker,label\nt1,a\n".as_bytes(),
            None::<&[u8]>,
            Vec::new(),
        )
        .unwrap_err();
        assert!(err.contains("line 2"), "{err}");
        let err = votes(
            Method::Weighted,
            input.as_bytes(),
            Some("worker,weight\nzz,1\n".as_bytes()),
            Vec::new(),
        )
        .unwrap_err();
        assert!(err.contains("zz"), "{err}");
        let mut out = Vec::new();
        votes(
            Method::Weighted,
            input.as_bytes(),
            Some("worker,weight\nc,5\n".as_bytes()),
            &mut out,
        )
        .unwrap();
        assert!(String::from_utf8(out).unwrap().contains("t1,y,"));
    }
}
