//! The labeler on 160+ hand-written radiology-style sentences (not produced by the simulator).

use cxr_max::{Finding, LabelStatus, findings};

const SENTENCES: &str = include_str!("../fixtures/labeler_sentences.tsv");

fn code(c: &str) -> Finding {
    match c {
        "AT" => Finding::Atelectasis,
        "CM" => Finding::Cardiomegaly,
        "CO" => Finding::Consolidation,
        "ED" => Finding::Edema,
        "EC" => Finding::EnlargedCardiomediastinum,
        "FR" => Finding::Fracture,
        "LL" => Finding::LungLesion,
        "LO" => Finding::LungOpacity,
        "NF" => Finding::NoFinding,
        "PE" => Finding::PleuralEffusion,
        "PO" => Finding::PleuralOther,
        "PN" => Finding::Pneumonia,
        "PX" => Finding::Pneumothorax,
        "SD" => Finding::SupportDevices,
        other => panic!("unknown code {other}"),
    }
}

/// Per-finding accuracy over the sentences that mention the finding (expected or predicted),
/// and overall over every (sentence, finding) pair.
#[test]
fn labeler_accuracy_on_hand_written_sentences() {
    let mut per = [(0usize, 0usize); 14]; // (correct, total) over sentences where it matters
    let (mut all_ok, mut all) = (0usize, 0usize);
    let mut exact_sentences = 0;
    let mut misses = Vec::new();
    let mut n = 0;
    for line in SENTENCES
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (expected, text) = line.split_once('\t').expect("expected<TAB>text");
        n += 1;
        let mut want = [LabelStatus::NotMentioned; 14];
        for item in expected.split_whitespace() {
            let (c, s) = item.split_at(2);
            want[code(c).index()] = match s {
                "+" => LabelStatus::Positive,
                "-" => LabelStatus::Negative,
                "?" => LabelStatus::Uncertain,
                other => panic!("bad status {other} in {line}"),
            };
        }
        let got = findings::extract(text).findings;
        let mut exact = true;
        for f in Finding::ALL {
            let (w, g) = (want[f.index()], got.get(f));
            all += 1;
            all_ok += usize::from(w == g);
            if w != LabelStatus::NotMentioned || g != LabelStatus::NotMentioned {
                per[f.index()].1 += 1;
                per[f.index()].0 += usize::from(w == g);
            }
            if w != g {
                exact = false;
                misses.push(format!("{f}: want {} got {} | {text}", w.name(), g.name()));
            }
        }
        exact_sentences += usize::from(exact);
    }
    assert!(n >= 150, "{n} sentences");
    eprintln!("labeler: {n} sentences, {exact_sentences} read exactly");
    for f in Finding::ALL {
        let (ok, total) = per[f.index()];
        eprintln!(
            "  {:<27} {ok:>3}/{total:<3} = {:.3}",
            f.column_name(),
            ok as f64 / total.max(1) as f64
        );
    }
    eprintln!(
        "  all (sentence, finding) pairs: {all_ok}/{all} = {:.4}",
        all_ok as f64 / all as f64
    );
    for m in &misses {
        eprintln!("  miss: {m}");
    }
    let mentioned_ok: usize = per.iter().map(|p| p.0).sum();
    let mentioned: usize = per.iter().map(|p| p.1).sum();
    let mentioned_acc = mentioned_ok as f64 / mentioned as f64;
    assert!(
        mentioned_acc >= 0.9,
        "accuracy over mentioned findings {mentioned_acc:.3}"
    );
    assert!(
        exact_sentences as f64 / n as f64 >= 0.85,
        "{exact_sentences}/{n} sentences exact"
    );
}

#[test]
fn later_statements_override_and_steps_are_sentences() {
    let text = "Possible small left effusion. On the lateral view, there is a definite left pleural effusion.\nNo pneumothorax.";
    let e = findings::extract(text);
    assert_eq!(e.sentences, 3);
    assert_eq!(
        e.findings.get(Finding::PleuralEffusion),
        LabelStatus::Positive
    );
    assert_eq!(
        e.status_at(Finding::PleuralEffusion, 1),
        LabelStatus::Uncertain
    );
    assert_eq!(
        e.status_at(Finding::PleuralEffusion, 2),
        LabelStatus::Positive
    );
    assert_eq!(
        e.mentions
            .iter()
            .find(|m| m.finding == Finding::Pneumothorax)
            .unwrap()
            .sentence,
        2
    );
    // Numbered lists and decimals do not split sentences.
    let list = "Findings support the diagnosis:\n1. Blunting of the left costophrenic angle.\n2. A 1.5 cm nodule.";
    let e = findings::extract(list);
    assert_eq!(e.sentences, 3);
    assert_eq!(e.findings.get(Finding::LungLesion), LabelStatus::Positive);
    // No Finding gives way to a pathology.
    let e = findings::extract("No acute cardiopulmonary process. Small right effusion.");
    assert_eq!(
        e.findings.get(Finding::NoFinding),
        LabelStatus::NotMentioned
    );
}

#[test]
fn every_statement_reads_back_as_itself_alone() {
    use cxr_max::{Finding, LabelStatus, findings};
    let mut checked = 0;
    for f in Finding::ALL {
        for status in [
            LabelStatus::Positive,
            LabelStatus::Negative,
            LabelStatus::Uncertain,
        ] {
            let s = findings::statement(f, status);
            if s.is_empty() {
                assert!(f == Finding::NoFinding && status != LabelStatus::Positive);
                continue;
            }
            let e = findings::extract(&s);
            assert_eq!(e.findings.get(f), status, "{f} {status:?}: {s}");
            assert!(
                e.mentions.iter().all(|m| m.finding == f),
                "{s} mentions another finding: {:?}",
                e.mentions
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 13 * 3 + 1);
}

/// A user lexicon extends the built-in one: a new synonym (with the built-in cues around it),
/// a new cue, and a new exclusion; the built-in phrases still read as before.
#[test]
fn a_user_extended_lexicon_labels_new_phrases() {
    use cxr_max::findings::{Labeler, Lexicon};
    let text = "Air in the pleural space is not seen. Lungs look spotless of pneumonia. \
                Pleural air bubble artefact.";
    let before = findings::extract(text);
    assert_eq!(
        before.findings.get(Finding::Pneumothorax),
        LabelStatus::NotMentioned
    );
    assert_eq!(
        before.findings.get(Finding::Pneumonia),
        LabelStatus::Positive
    );

    let mut lexicon = Lexicon::builtin();
    let added = Lexicon::from_toml_str(
        r#"
[cues]
negation = ["spotless of"]

[[synonyms]]
findings = ["Pneumothorax"]
phrases = ["air in the pleural space", "pleural air"]

# Not a pneumothorax: claimed without a finding, longer than "pleural air".
[[synonyms]]
findings = []
phrases = ["pleural air bubble artefact"]
"#,
    )
    .unwrap();
    assert_eq!(added.phrases(), 3);
    lexicon.extend(added);
    assert_eq!(lexicon.phrases(), Lexicon::builtin().phrases() + 3);
    let labeler = Labeler::with_lexicon(lexicon);
    let after = labeler.extract(text);
    let pneumothorax: Vec<_> = after
        .mentions
        .iter()
        .filter(|m| m.finding == Finding::Pneumothorax)
        .map(|m| (m.sentence, m.status))
        .collect();
    assert_eq!(pneumothorax, [(0, LabelStatus::Negative)]);
    assert_eq!(
        after.findings.get(Finding::Pneumonia),
        LabelStatus::Negative
    );

    // The default labeler is the built-in lexicon, and reads as `findings::extract`.
    let default = Labeler::default();
    assert_eq!(default.lexicon(), &Lexicon::builtin());
    for sentence in [text, "No pleural effusion. Possible atelectasis."] {
        assert_eq!(default.extract(sentence), findings::extract(sentence));
    }
}
