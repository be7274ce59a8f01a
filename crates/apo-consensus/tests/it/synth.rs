//! Consensus trajectories and preference sets with a toy claim extractor.

use apo_consensus::{
    Claim, ClaimConfig, ClaimExtractor, ClaimSynthesizer, NegativePolicy, NegativeWeighting,
    Polarity, PositiveStyle, PreferenceConfig, PreferenceInput, Reading, SkipReason, Source,
    Synthesizer, build_preference,
};

/// Topics are the words `alpha`, `beta`, `gamma`; `no X` is absent, `maybe X` uncertain,
/// any other mention present; sentences end at `.`.
struct Toy;

const TOPICS: [&str; 3] = ["alpha", "beta", "gamma"];

impl ClaimExtractor for Toy {
    fn topics(&self) -> usize {
        3
    }

    fn read(&self, text: &str) -> Reading {
        let mut r = Reading {
            finals: vec![None; 3],
            ..Reading::default()
        };
        let mut start = 0;
        for (i, c) in text.char_indices() {
            if c == '.' {
                let s = text[start..=i].trim();
                let offset = start + text[start..=i].find(s).unwrap_or(0);
                r.sentences.push((offset, offset + s.len()));
                start = i + 1;
            }
        }
        for (j, &(a, b)) in r.sentences.iter().enumerate() {
            let words: Vec<String> = text[a..b]
                .split(|c: char| !c.is_alphanumeric())
                .map(str::to_lowercase)
                .collect();
            for (w, word) in words.iter().enumerate() {
                if let Some(t) = TOPICS.iter().position(|x| x == word) {
                    let prev = if w > 0 { words[w - 1].as_str() } else { "" };
                    let polarity = match prev {
                        "no" => Polarity::Absent,
                        "maybe" => Polarity::Uncertain,
                        _ => Polarity::Present,
                    };
                    r.claims.push(Claim {
                        sentence: j,
                        topic: t,
                        polarity,
                    });
                    r.finals[t] = Some(polarity);
                }
            }
        }
        r
    }

    fn render(&self, topic: usize, polarity: Polarity) -> String {
        match polarity {
            Polarity::Present => format!("Clear {}.", TOPICS[topic]),
            Polarity::Absent => format!("No {}.", TOPICS[topic]),
            Polarity::Uncertain => format!("Maybe {}.", TOPICS[topic]),
        }
    }

    fn impression(&self, consensus: &[Option<Polarity>]) -> Option<String> {
        let present: Vec<&str> = (0..3)
            .filter(|&t| consensus[t] == Some(Polarity::Present))
            .map(|t| TOPICS[t])
            .collect();
        (!present.is_empty()).then(|| format!("Overall {}.", present.join(" and ")))
    }
}

fn sources() -> Vec<Source<'static>> {
    vec![
        Source {
            teacher: "t1",
            text: "Findings: a small alpha on the left. No beta. Maybe gamma.",
        },
        Source {
            teacher: "t2",
            text: "1. A small alpha on the right.\n2. No beta. 3. No gamma.",
        },
        Source {
            teacher: "t3",
            text: "No alpha. Beta is visible. No gamma.",
        },
        Source {
            teacher: "t4",
            text: "Maybe alpha. The alpha is large and dense. No beta.",
        },
    ]
}

const CONSENSUS: [Option<Polarity>; 3] = [Some(Polarity::Present), Some(Polarity::Absent), None];

#[test]
fn claim_synthesizer_keeps_supported_claims_and_reads_back() {
    let s = ClaimSynthesizer::new(Toy, ClaimConfig::default()).unwrap();
    let out = s.synthesize(&sources(), &CONSENSUS).unwrap();
    assert!(out.verified, "{out:?}");
    // The two near-identical alpha sentences (t1, t2) merge and win over t4's; list markers
    // and headers are stripped; gamma (no consensus) is not mentioned; the impression is last.
    assert_eq!(
        out.text,
        "Findings: a small alpha on the left. No beta.\nOverall alpha."
    );
    assert_eq!(out.sentences[0].teachers, ["t1", "t2"]);
    assert_eq!(out.sentences[0].support, 3);
    assert_eq!(out.sentences[1].teachers, ["t1", "t2", "t4"]);
    assert!(out.rendered.is_empty());
    let back = Toy.read(&out.text);
    assert_eq!(back.finals, CONSENSUS.to_vec());
}

#[test]
fn unsupported_topics_are_rendered_and_min_support_is_respected() {
    let config = ClaimConfig {
        min_support: 4,
        impression: false,
        ..ClaimConfig::default()
    };
    let s = ClaimSynthesizer::new(Toy, config).unwrap();
    let out = s.synthesize(&sources(), &CONSENSUS).unwrap();
    // No claim has four supporting teachers: both topics come from templates.
    assert_eq!(out.text, "Findings: Clear alpha. No beta.");
    assert_eq!(out.rendered, [0, 1]);
    assert!(out.verified);
    // Against the majority: gamma present although t2 and t3 say no.
    let consensus = [None, None, Some(Polarity::Present)];
    let out = ClaimSynthesizer::new(Toy, ClaimConfig::default())
        .unwrap()
        .synthesize(&sources(), &consensus)
        .unwrap();
    assert_eq!(out.text, "Findings: Clear gamma.\nOverall gamma.");
    assert!(
        ClaimSynthesizer::new(Toy, ClaimConfig::default())
            .unwrap()
            .synthesize(&sources(), &[None, Some(Polarity::Uncertain), None])
            .is_err()
    );
    assert!(
        ClaimSynthesizer::new(Toy, ClaimConfig::default())
            .unwrap()
            .synthesize(&sources(), &[None])
            .is_err()
    );
    assert!(
        ClaimSynthesizer::new(
            Toy,
            ClaimConfig {
                similarity: 0.0,
                ..ClaimConfig::default()
            }
        )
        .is_err()
    );
}

fn finals() -> Vec<Vec<Option<Polarity>>> {
    sources().iter().map(|s| Toy.read(s.text).finals).collect()
}

#[test]
fn preference_policies_weights_and_skips() {
    let synth = ClaimSynthesizer::new(Toy, ClaimConfig::default()).unwrap();
    let srcs = sources();
    let fin = finals();
    let input = PreferenceInput {
        id: "img1",
        sources: &srcs,
        finals: &fin,
        consensus: &CONSENSUS,
        confidence: &[0.9, 0.8, 0.0],
        readings: None,
    };
    let mut config = PreferenceConfig::default();
    let all = build_preference(&input, &synth, &config).unwrap().unwrap();
    assert_eq!(all.rejected.len(), 4);
    assert!((all.agreement - 0.85).abs() < 1e-12);
    // t1: agrees on both; t2: agrees; t3: contradicts both; t4: agrees (its final alpha is
    // present), no beta.
    let drift: Vec<f64> = all.rejected.iter().map(|n| n.drift).collect();
    assert_eq!(drift, [0.0, 0.0, 1.0, 0.0]);
    assert_eq!(all.rejected[2].contradictions, 2);
    assert!(all.rejected.iter().all(|n| n.weight.is_none()));

    config.negatives = NegativePolicy::Dissenting;
    let d = build_preference(&input, &synth, &config).unwrap().unwrap();
    assert_eq!(d.rejected.len(), 1);
    assert_eq!(d.rejected[0].teacher, "t3");

    config.negatives = NegativePolicy::TopK(2);
    config.weighting = NegativeWeighting::Drift;
    let k = build_preference(&input, &synth, &config).unwrap().unwrap();
    let names: Vec<&str> = k.rejected.iter().map(|n| n.teacher.as_str()).collect();
    assert_eq!(names, ["t3", "t1"]);
    let w: Vec<f64> = k.rejected.iter().map(|n| n.weight.unwrap()).collect();
    assert!(
        (w[0] - 1.1 / 0.6).abs() < 1e-12 && (w[1] - 0.1 / 0.6).abs() < 1e-12,
        "{w:?}"
    );

    // Skips, each with its reason.
    let agreeing: Vec<Source<'_>> = srcs[..2].to_vec();
    let input2 = PreferenceInput {
        sources: &agreeing,
        finals: &fin[..2],
        ..input.clone()
    };
    config.negatives = NegativePolicy::Dissenting;
    assert_eq!(
        build_preference(&input2, &synth, &config).unwrap(),
        Err(SkipReason::NoNegatives)
    );
    let low = PreferenceInput {
        confidence: &[0.5, 0.5, 0.0],
        readings: None,
        ..input.clone()
    };
    assert_eq!(
        build_preference(&low, &synth, &config).unwrap(),
        Err(SkipReason::NoConsensus)
    );
    config.min_agreement = 0.95;
    assert_eq!(
        build_preference(&input, &synth, &config).unwrap(),
        Err(SkipReason::LowAgreement)
    );
    let bad = PreferenceInput {
        finals: &fin[..1],
        ..input.clone()
    };
    assert!(build_preference(&bad, &synth, &config).is_err());
    assert!("top-0".parse::<NegativePolicy>().is_err());
    assert_eq!(
        "top-3".parse::<NegativePolicy>().unwrap(),
        NegativePolicy::TopK(3)
    );
}

/// `edits-K`: the negatives are the consensus rewritten with one finding flipped, the
/// findings most teachers contradict first, each reading back as its flipped consensus and
/// otherwise saying what the chosen text says.
#[test]
fn minimal_pair_negatives_flip_one_finding_each() {
    let synth = ClaimSynthesizer::new(Toy, ClaimConfig::default()).unwrap();
    let srcs = sources();
    let fin = finals();
    // t3 contradicts alpha and beta; a fifth teacher contradicts beta only, so beta (two
    // teachers against) comes before alpha (one).
    let mut srcs5 = srcs.clone();
    srcs5.push(Source {
        teacher: "t5",
        text: "Clear alpha. Clear beta.",
    });
    let mut fin5 = fin.clone();
    fin5.push(Toy.read(srcs5[4].text).finals);
    let input = PreferenceInput {
        id: "img1",
        sources: &srcs5,
        finals: &fin5,
        consensus: &CONSENSUS,
        confidence: &[0.9, 0.8, 0.0],
        readings: None,
    };
    let config = PreferenceConfig {
        negatives: NegativePolicy::Edits(7),
        ..PreferenceConfig::default()
    };
    let set = build_preference(&input, &synth, &config).unwrap().unwrap();
    let names: Vec<&str> = set.rejected.iter().map(|n| n.teacher.as_str()).collect();
    // gamma has no consensus: nothing to flip.
    assert_eq!(names, ["edit:1:present", "edit:0:absent"]);
    let chosen = Toy.read(&set.chosen).finals;
    for (n, t) in set.rejected.iter().zip([1, 0]) {
        let read = Toy.read(&n.text).finals;
        for topic in 0..3 {
            if topic == t {
                assert_ne!(read[topic], chosen[topic], "{}: {}", n.teacher, n.text);
                assert!(read[topic].is_some());
            } else {
                assert_eq!(read[topic], chosen[topic], "{}: {}", n.teacher, n.text);
            }
        }
        assert_eq!((n.contradictions, n.hedges, n.omissions), (1, 0, 0));
        assert!((n.drift - 0.5).abs() < 1e-12);
    }
    let one = PreferenceConfig {
        negatives: NegativePolicy::Edits(1),
        ..PreferenceConfig::default()
    };
    let set1 = build_preference(&input, &synth, &one).unwrap().unwrap();
    assert_eq!(set1.rejected, set.rejected[..1]);
    assert_eq!(
        "edits-3".parse::<NegativePolicy>().unwrap(),
        NegativePolicy::Edits(3)
    );
    assert_eq!(NegativePolicy::Edits(3).to_string(), "edits-3");
    assert!("edits-0".parse::<NegativePolicy>().is_err());
}

#[cfg(feature = "serde")]
#[test]
fn exports_have_each_trainers_layout() {
    use apo_consensus::export::{self, ItemContext};
    let synth = ClaimSynthesizer::new(Toy, ClaimConfig::default()).unwrap();
    let srcs = sources();
    let fin = finals();
    let input = PreferenceInput {
        id: "img1",
        sources: &srcs,
        finals: &fin,
        consensus: &CONSENSUS,
        confidence: &[0.9, 0.8, 0.0],
        readings: None,
    };
    let set = build_preference(&input, &synth, &PreferenceConfig::default())
        .unwrap()
        .unwrap();
    let topics: Vec<String> = TOPICS.iter().map(|s| (*s).to_owned()).collect();
    let images = vec!["files/a.jpg".to_owned()];
    let ctx = ItemContext {
        prompt: "Describe.",
        images: &images,
        topics: &topics,
    };
    let ours = serde_json::to_value(export::ours_row(&set, &ctx)).unwrap();
    assert_eq!(
        ours["consensus"],
        serde_json::json!({"alpha":"present","beta":"absent"})
    );
    assert_eq!(ours["rejected"].as_array().unwrap().len(), 4);
    assert_eq!(ours["images"], serde_json::json!(["files/a.jpg"]));

    let trl = export::trl_rows(&set, &ctx);
    assert_eq!(trl.len(), 4);
    let row = serde_json::to_value(&trl[2]).unwrap();
    assert_eq!(
        row["prompt"],
        serde_json::json!([{"role":"user","content":[{"type":"image"},{"type":"text","text":"Describe."}]}])
    );
    assert_eq!(row["chosen"][0]["content"][0]["text"], set.chosen.as_str());
    assert_eq!(row["rejected"][0]["content"][0]["text"], srcs[2].text);
    // TRL's four columns, the image id and the negative's teacher (no weight when uniform).
    assert_eq!(row.as_object().unwrap().len(), 6);
    assert_eq!(row["id"], set.id.as_str());
    assert_eq!(row["teacher"], srcs[2].teacher);

    let swift = export::swift_rows(&set, &ctx);
    let row = serde_json::to_value(&swift[0]).unwrap();
    assert_eq!(row["messages"][0]["content"], "<image>Describe.");
    assert_eq!(row["messages"][1]["role"], "assistant");
    assert_eq!(row["messages"][1]["content"], set.chosen.as_str());
    assert_eq!(row["rejected_response"], srcs[0].text);
    assert_eq!(row["images"], serde_json::json!(["files/a.jpg"]));
}

fn closest_teacher() -> ClaimSynthesizer<Toy> {
    ClaimSynthesizer::new(
        Toy,
        ClaimConfig {
            style: PositiveStyle::ClosestTeacher,
            ..ClaimConfig::default()
        },
    )
    .unwrap()
}

#[test]
fn closest_teacher_edits_the_trajectory_needing_fewest_edits() {
    // t1, t2 and t4 each need one edit (a sentence about gamma, which has no consensus, or
    // t4's hedge revised later); the earliest wins and keeps its own header and wording.
    let out = closest_teacher()
        .synthesize(&sources(), &CONSENSUS)
        .unwrap();
    assert_eq!(out.base.as_deref(), Some("t1"));
    assert_eq!(out.text, "Findings: a small alpha on the left. No beta.");
    assert!(out.verified);
    assert_eq!(out.dropped, 1);
    assert!(out.rendered.is_empty());
    assert_eq!(Toy.read(&out.text).finals, CONSENSUS.to_vec());
    // The merged style is unchanged and has no base.
    let merged = ClaimSynthesizer::new(Toy, ClaimConfig::default())
        .unwrap()
        .synthesize(&sources(), &CONSENSUS)
        .unwrap();
    assert_eq!(merged.base, None);
}

#[test]
fn closest_teacher_replaces_in_place_adds_missing_topics_and_keeps_framing() {
    let consensus = [
        Some(Polarity::Present),
        Some(Polarity::Absent),
        Some(Polarity::Absent),
    ];
    let sources = [
        // One contradiction (alpha) and one missing topic (gamma): 2 edits.
        Source {
            teacher: "u0",
            text: "Findings: no alpha. No beta. Thanks for reading.",
        },
        // Beta contradicts, gamma missing: 2 edits, later than u0.
        Source {
            teacher: "u1",
            text: "Alpha is big. Beta is big.",
        },
        // A hedge revised later, beta and gamma missing: 3 edits.
        Source {
            teacher: "u2",
            text: "Maybe alpha. Alpha seen.",
        },
    ];
    let out = closest_teacher().synthesize(&sources, &consensus).unwrap();
    assert_eq!(out.base.as_deref(), Some("u0"));
    // The wrong alpha sentence is replaced where it stood, under its header, by the merged
    // text's alpha sentence (u2's, the shorter of two with equal support); gamma, which u0
    // never states, follows the last finding sentence and precedes the closing words.
    assert_eq!(
        out.text,
        "Findings: Alpha seen. No beta. No gamma. Thanks for reading."
    );
    assert_eq!(out.dropped, 1);
    // Only u0 says "no beta", under min_support 2: the merged text renders beta; here u0's
    // own sentence stays. Gamma's sentence is rendered.
    assert_eq!(out.rendered, [2]);
    let teachers: Vec<&[String]> = out.sentences.iter().map(|p| &p.teachers[..]).collect();
    assert_eq!(teachers, [&["u2".to_owned()][..], &["u0".to_owned()], &[]]);
    assert_eq!(Toy.read(&out.text).finals, consensus.to_vec());
}

#[test]
fn closest_teacher_keeps_the_header_of_a_removed_sentence() {
    let consensus = [Some(Polarity::Present), Some(Polarity::Absent), None];
    let sources = [Source {
        teacher: "u0",
        text: "Findings: maybe gamma. No beta. Alpha here.",
    }];
    let out = closest_teacher().synthesize(&sources, &consensus).unwrap();
    assert_eq!(out.text, "Findings: No beta. Alpha here.");
    assert_eq!(out.base.as_deref(), Some("u0"));
}

#[test]
fn positive_style_names_round_trip() {
    for style in [PositiveStyle::Merged, PositiveStyle::ClosestTeacher] {
        assert_eq!(style.name().parse::<PositiveStyle>().unwrap(), style);
    }
    let err = "closest".parse::<PositiveStyle>().unwrap_err().to_string();
    assert!(err.contains("merged or closest-teacher"), "{err}");
}

#[test]
fn readings_passed_in_give_the_same_preference_set_and_must_match_the_sources() {
    let synth = ClaimSynthesizer::new(Toy, ClaimConfig::default()).unwrap();
    let srcs = sources();
    let fin = finals();
    let readings: Vec<_> = srcs
        .iter()
        .map(|s| synth.extractor().read(s.text))
        .collect();
    let read_here = PreferenceInput {
        id: "img1",
        sources: &srcs,
        finals: &fin,
        consensus: &CONSENSUS,
        confidence: &[0.9, 0.8, 0.0],
        readings: None,
    };
    let read_before = PreferenceInput {
        readings: Some(&readings),
        ..read_here.clone()
    };
    let config = PreferenceConfig::default();
    let a = build_preference(&read_here, &synth, &config)
        .unwrap()
        .unwrap();
    let b = build_preference(&read_before, &synth, &config)
        .unwrap()
        .unwrap();
    assert_eq!(a, b);
    assert!(a.chosen.contains("alpha"), "{}", a.chosen);
    let short = PreferenceInput {
        readings: Some(&readings[..1]),
        ..read_here.clone()
    };
    let err = build_preference(&short, &synth, &config).unwrap_err();
    assert!(err.to_string().contains("readings"), "{err}");
}

/// Thresholds outside [0, 1] are errors naming the threshold (a threshold above 1 would skip
/// every item and write an empty file); user weights that are all 0 are an error.
#[test]
fn thresholds_outside_zero_one_and_all_zero_weights_are_errors() {
    use apo_consensus::{ConsensusError, PreferenceConfig, check_weights};
    for (min_confidence, min_agreement, name) in [
        (1.5, 0.0, "min_confidence"),
        (-0.1, 0.0, "min_confidence"),
        (f64::NAN, 0.0, "min_confidence"),
        (0.5, 2.0, "min_agreement"),
    ] {
        let config = PreferenceConfig {
            min_confidence,
            min_agreement,
            ..PreferenceConfig::default()
        };
        match config.validate() {
            Err(ConsensusError::OutOfRange { name: n, .. }) => assert_eq!(n, name),
            other => panic!("{min_confidence} {min_agreement}: {other:?}"),
        }
    }
    assert_eq!(PreferenceConfig::default().validate(), Ok(()));
    let workers = ["a".to_owned(), "b".to_owned()];
    assert_eq!(
        check_weights(&workers, &[("a", 0.0), ("b", 0.0)]),
        Err(ConsensusError::ZeroWeights)
    );
    assert_eq!(check_weights(&workers, &[("a", 0.0), ("b", 0.5)]), Ok(()));
}

/// A synthesizer whose consensus text is one teacher's trajectory, as `closest-teacher` writes
/// it when that teacher needs no edit.
struct Copies(usize);

impl apo_consensus::Synthesizer for Copies {
    fn synthesize(
        &self,
        sources: &[apo_consensus::Source<'_>],
        _consensus: &[Option<Polarity>],
    ) -> apo_consensus::Result<apo_consensus::Synthesis> {
        Ok(apo_consensus::Synthesis {
            text: sources[self.0].text.to_owned(),
            sentences: Vec::new(),
            rendered: Vec::new(),
            dropped: 0,
            verified: true,
            base: Some(sources[self.0].teacher.to_owned()),
        })
    }
}

/// A negative whose text is the chosen text (white space aside) is left out and counted, the
/// drift weights are normalised over the negatives that stay, and every TRL / ms-swift row
/// carries the item id, the teacher and the weight.
#[test]
fn a_negative_equal_to_the_chosen_text_is_dropped_and_counted() {
    let sources = [
        apo_consensus::Source {
            teacher: "A",
            text: "No effusion.",
        },
        apo_consensus::Source {
            teacher: "B",
            text: "Effusion present.",
        },
        apo_consensus::Source {
            teacher: "C",
            text: "Maybe effusion.",
        },
    ];
    let finals = vec![
        vec![Some(Polarity::Absent)],
        vec![Some(Polarity::Present)],
        vec![Some(Polarity::Uncertain)],
    ];
    let input = PreferenceInput {
        id: "img-1",
        sources: &sources,
        finals: &finals,
        consensus: &[Some(Polarity::Absent)],
        confidence: &[0.9],
        readings: None,
    };
    let config = PreferenceConfig {
        weighting: NegativeWeighting::Drift,
        ..PreferenceConfig::default()
    };
    let set = apo_consensus::build_preference(&input, &Copies(0), &config)
        .unwrap()
        .unwrap();
    assert_eq!(set.chosen, "No effusion.");
    assert_eq!(set.identical_dropped, 1);
    let teachers: Vec<&str> = set.rejected.iter().map(|n| n.teacher.as_str()).collect();
    assert_eq!(teachers, ["B", "C"]);
    let mean: f64 = set.rejected.iter().map(|n| n.weight.unwrap()).sum::<f64>() / 2.0;
    assert!(
        (mean - 1.0).abs() < 1e-12,
        "weights normalised over what stays"
    );
    // B contradicts (drift 1), C hedges (drift 0.5): weights (1.1, 0.6) / 0.85.
    assert!((set.rejected[0].weight.unwrap() - 1.1 / 0.85).abs() < 1e-12);

    // The exports (behind the `serde` feature).
    #[cfg(feature = "serde")]
    {
        let topics = vec!["Pleural Effusion".to_owned()];
        let images = vec!["/data/img-1.jpg".to_owned()];
        let ctx = apo_consensus::export::ItemContext {
            prompt: "Describe.",
            images: &images,
            topics: &topics,
        };
        let trl = apo_consensus::export::trl_rows(&set, &ctx);
        assert_eq!(trl.len(), 2);
        assert_eq!(
            (trl[0].id.as_str(), trl[0].teacher.as_str()),
            ("img-1", "B")
        );
        assert_eq!(trl[0].weight, set.rejected[0].weight);
        let line = serde_json::to_value(&trl[1]).unwrap();
        assert_eq!(line["teacher"], "C");
        assert!(line["weight"].as_f64().is_some());
        let swift = apo_consensus::export::swift_rows(&set, &ctx);
        assert_eq!(swift[1].teacher, "C");
        assert_eq!(swift[1].id, "img-1");

        // Uniform weights: no weight column.
        let uniform =
            apo_consensus::build_preference(&input, &Copies(0), &PreferenceConfig::default())
                .unwrap()
                .unwrap();
        let line =
            serde_json::to_value(&apo_consensus::export::trl_rows(&uniform, &ctx)[0]).unwrap();
        assert!(line.get("weight").is_none());
    }

    // Every negative equal to the chosen text: no preference set.
    let same = [
        apo_consensus::Source {
            teacher: "A",
            text: "No effusion.",
        },
        apo_consensus::Source {
            teacher: "B",
            text: " No effusion. ",
        },
    ];
    let finals2 = vec![vec![Some(Polarity::Absent)], vec![Some(Polarity::Absent)]];
    let input2 = PreferenceInput {
        sources: &same,
        finals: &finals2,
        ..input
    };
    let r =
        apo_consensus::build_preference(&input2, &Copies(0), &PreferenceConfig::default()).unwrap();
    assert_eq!(r, Err(apo_consensus::SkipReason::NoNegatives));
}
