//! Data parallelism on burn's collective backend (`burn-collective`): one worker thread per
//! device, each micro-batch split across the workers, gradients summed with burn's all-reduce
//! before the optimiser step, so every worker applies the same update and keeps the same
//! weights.
//!
//! - [`shard`]: the contiguous part of a batch a worker computes.
//! - [`run`]: starts the workers (rank 0 on the calling thread, the others on scoped threads),
//!   registers each as a peer of burn's collective (local, or global across nodes through
//!   burn's orchestrator), and turns one worker's failure into [`TrainError::Worker`].
//! - [`Worker::sync`]: the step's exchange. One small all-reduce carries every worker's
//!   status (failed or not), its metric sums and which parameters it has gradients
//!   for; one more carries all gradients, flattened into a single bucket (burn 0.21 has no
//!   bucketing of its own). A worker whose micro-batch failed still takes part in the first,
//!   so the others stop at the same step instead of waiting for it.
//! - [`orchestrator`]: burn's global orchestrator, for runs over several machines.

use std::marker::PhantomData;
use std::ops::Range;

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use burn_collective::{CollectiveConfig, PeerId, ReduceOperation};

use crate::config::RunSettings;
use crate::{Result, TrainError};

/// The part of a batch of `n` units that worker `rank` of `world` computes: contiguous, the
/// first `n % world` workers one unit more; together the shards are disjoint and cover
/// `0..n`.
pub fn shard(rank: usize, world: usize, n: usize) -> Range<usize> {
    let world = world.max(1);
    let (base, extra) = (n / world, n % world);
    let start = rank * base + rank.min(extra);
    start..start + base + usize::from(rank < extra)
}

/// `count` devices of the kind of `first` (its index and the next ones; on the CPU backend
/// the one CPU device `count` times).
pub fn devices<B: Backend>(first: &B::Device, count: usize) -> Vec<B::Device> {
    use burn::tensor::backend::DeviceOps;
    let id = first.id();
    (0..count)
        .map(|i| {
            let mut next = id;
            next.index_id = id.index_id + i as u16;
            <B::Device as burn::tensor::backend::Device>::from_id(next)
        })
        .collect()
}

/// One worker of a data-parallel run.
#[derive(Debug, Clone)]
pub struct Worker<B: AutodiffBackend> {
    /// Global rank: `node_rank · devices + local index`.
    pub rank: usize,
    /// The number of workers over all nodes.
    pub world: usize,
    /// This worker's device.
    pub device: B::Device,
    peer: PeerId,
    /// Whether a collective was registered (more than one worker).
    collective: bool,
    /// Workers on each node.
    devices_per_node: usize,
    /// The gradient bucket's all-reduce when it is not burn-collective's (one node only).
    bucket_reduce: Option<(
        LocalReduce<B::InnerBackend>,
        Vec<burn::tensor::backend::DeviceId>,
    )>,
}

/// An all-reduce (sum) of one 1-D tensor per device of this machine, called by every local
/// worker with its tensor and all local devices' ids: the gradient bucket's path when
/// `run.all_reduce = "nccl"` (apo-cli installs burn's NCCL all-reduce for its CUDA backends
/// when built with `distributed`).
pub type LocalReduce<B> = fn(Tensor<B, 1>, &[burn::tensor::backend::DeviceId]) -> Tensor<B, 1>;

static LOCAL_REDUCE: std::sync::Mutex<Vec<(std::any::TypeId, Box<dyn std::any::Any + Send>)>> =
    std::sync::Mutex::new(Vec::new());

/// Installs `f` as backend `B`'s [`LocalReduce`].
pub fn set_local_reduce<B: Backend>(f: LocalReduce<B>) {
    let mut all = LOCAL_REDUCE.lock().unwrap_or_else(|p| p.into_inner());
    all.retain(|(t, _)| *t != std::any::TypeId::of::<B>());
    all.push((std::any::TypeId::of::<B>(), Box::new(f)));
}

fn local_reduce<B: Backend>() -> Option<LocalReduce<B>> {
    let all = LOCAL_REDUCE.lock().unwrap_or_else(|p| p.into_inner());
    all.iter()
        .find(|(t, _)| *t == std::any::TypeId::of::<B>())
        .and_then(|(_, f)| f.downcast_ref::<LocalReduce<B>>().copied())
}

/// Several runs of [`run`] at once in one process would share burn's local collective server
/// (one per backend type); they take turns.
static SESSION: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A failure on another worker (reported through the step's exchange); [`run`] reports the
/// failing worker's own error instead.
const PEER_FAILED: &str = "another worker of the run failed";

fn collective_err(e: burn_collective::CollectiveError) -> TrainError {
    TrainError::Collective(format!("{e:?}"))
}

fn is_peer_failure(e: &TrainError) -> bool {
    matches!(e, TrainError::Collective(m) if m == PEER_FAILED)
}

/// burn's collective settings for `run` (`run.devices` here, global ones when `run.nodes > 1`).
///
/// # Errors
/// [`TrainError::Config`] for bad addresses.
fn collective_config(run: &RunSettings) -> Result<CollectiveConfig> {
    let mut config = CollectiveConfig::default().with_num_devices(run.devices.max(1));
    if run.nodes > 1 {
        let addr = |field: &str, v: &Option<String>| -> Result<burn_communication::Address> {
            let v = v.as_deref().unwrap_or_default();
            v.parse().map_err(|e: String| TrainError::Config {
                field: field.into(),
                value: v.into(),
                expected: format!("an address like ws://host:3000 ({e})"),
            })
        };
        config = config
            .with_num_nodes(run.nodes)
            .with_global_address(addr("run.orchestrator", &run.orchestrator)?)
            .with_node_address(addr("run.node_address", &run.node_address)?)
            .with_data_service_port(run.data_port.unwrap_or_default());
    }
    Ok(config)
}

/// A worker's outcome: its result, or the payload of its panic.
type Outcome<R> = std::thread::Result<Result<R>>;

/// Registers `w` with burn's collective, runs `body`, unregisters. A panic in `body` resets
/// the collective, so that the other workers' pending and later operations fail instead of
/// waiting for this one; [`run`] raises the panic again once every worker has stopped.
fn in_session<B: AutodiffBackend, R>(
    w: &Worker<B>,
    config: &CollectiveConfig,
    body: impl FnOnce() -> Result<R>,
) -> Outcome<R> {
    if let Err(e) =
        burn_collective::register::<B::InnerBackend>(w.peer, w.device.clone(), config.clone())
    {
        return Ok(Err(collective_err(e)));
    }
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
    match &out {
        Ok(_) => {
            let _ = burn_collective::finish_collective::<B::InnerBackend>(w.peer);
        }
        Err(_) => burn_collective::reset_collective::<B::InnerBackend>(),
    }
    out
}

/// Runs `work` on every local worker of `run` (`run.devices` devices of the kind of
/// `device`): this node's first worker on the calling thread with `observer`, the others on
/// threads without one. With one worker in all, `work` runs alone and no collective is
/// started. Returns this node's first worker's result.
///
/// # Errors
/// The failing worker's error as [`TrainError::Worker`] (an interruption is passed on as is);
/// collective errors.
pub fn run<B, R, F>(
    run: &RunSettings,
    device: &B::Device,
    observer: &mut dyn crate::train::Observer,
    work: F,
) -> Result<R>
where
    B: AutodiffBackend,
    R: Send,
    F: Fn(&Worker<B>, &mut dyn crate::train::Observer) -> Result<R> + Sync,
{
    run.validate_parallel()?;
    let world = run.world();
    if world == 1 {
        let worker = Worker {
            rank: 0,
            world: 1,
            device: device.clone(),
            peer: PeerId(0),
            collective: false,
            devices_per_node: 1,
            bucket_reduce: None,
        };
        return work(&worker, observer);
    }
    let _session = SESSION.lock().unwrap_or_else(|p| p.into_inner());
    let config = collective_config(run)?;
    burn_collective::reset_collective::<B::InnerBackend>();
    let first_rank = run.node_rank as usize * run.devices.max(1);
    let local = devices::<B>(device, run.devices.max(1));
    let bucket_reduce = match run.all_reduce {
        crate::config::AllReduce::Collective => None,
        crate::config::AllReduce::Nccl => {
            use burn::tensor::backend::DeviceOps;
            let f = local_reduce::<B::InnerBackend>().ok_or_else(|| TrainError::Config {
                field: "run.all_reduce".into(),
                value: "nccl".into(),
                expected: "`collective` unless apo is built with the `distributed` feature and trains with --device cuda".into(),
            })?;
            Some((f, local.iter().map(|d| d.id()).collect::<Vec<_>>()))
        }
    };
    let workers: Vec<Worker<B>> = local
        .into_iter()
        .enumerate()
        .map(|(i, device)| Worker {
            rank: first_rank + i,
            world,
            device,
            peer: PeerId((first_rank + i) as u32),
            collective: true,
            devices_per_node: run.devices.max(1),
            bucket_reduce: bucket_reduce.clone(),
        })
        .collect();
    tracing::info!(
        workers = workers.len(),
        world,
        node = run.node_rank,
        "data-parallel workers"
    );
    let (first, rest) = workers.split_first().expect("at least one worker");
    let results: Vec<(usize, String, Outcome<R>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = rest
            .iter()
            .map(|w| {
                let (work, config) = (&work, &config);
                scope.spawn(move || in_session(w, config, || work(w, &mut crate::train::Quiet)))
            })
            .collect();
        let head = in_session(first, &config, || work(first, observer));
        let mut out = vec![(first.rank, format!("{:?}", first.device), head)];
        for (w, h) in rest.iter().zip(handles) {
            let r = h.join().unwrap_or_else(Err);
            out.push((w.rank, format!("{:?}", w.device), r));
        }
        out
    });
    let mut head = None;
    let mut failure = None;
    let mut panic = None;
    for (rank, device, r) in results {
        let r = match r {
            Ok(r) => r,
            Err(payload) => {
                panic.get_or_insert(payload);
                continue;
            }
        };
        match r {
            Err(TrainError::Interrupted { .. }) if rank == first_rank => head = Some(r),
            Err(TrainError::Interrupted { .. }) => {}
            Err(e) if is_peer_failure(&e) => {
                failure.get_or_insert(e);
            }
            Err(e) => {
                if failure.as_ref().is_none_or(is_peer_failure) {
                    failure = Some(TrainError::Worker {
                        rank,
                        world,
                        device,
                        source: Box::new(e),
                    });
                }
            }
            Ok(v) if rank == first_rank => head = Some(Ok(v)),
            Ok(_) => {}
        }
    }
    if let Some(payload) = panic {
        std::panic::resume_unwind(payload);
    }
    if let Some(e) = failure {
        return Err(e);
    }
    head.unwrap_or_else(|| {
        Err(TrainError::Empty(
            "the first worker returned nothing".into(),
        ))
    })
}

/// A model for each local worker: the first worker takes `model` itself, the others a copy
/// forked to their device (on the same device: a detached copy with its own autodiff leaves).
#[derive(Debug)]
pub struct Copies<M>(Vec<std::sync::Mutex<Option<M>>>);

impl<M: Send> Copies<M> {
    /// `model` for the first of `devices`, `fork(model, device)` for each other one.
    pub fn new<D>(model: M, devices: &[D], fork: impl Fn(&M, &D) -> M) -> Self {
        let others: Vec<M> = devices.iter().skip(1).map(|d| fork(&model, d)).collect();
        Self::from_vec(std::iter::once(model).chain(others).collect())
    }

    /// One copy per local worker, in order, made by the caller.
    pub fn from_vec(models: Vec<M>) -> Self {
        Copies(
            models
                .into_iter()
                .map(|m| std::sync::Mutex::new(Some(m)))
                .collect(),
        )
    }

    /// Runs `f` on the copy of local worker `index` (before it is taken).
    ///
    /// # Errors
    /// [`TrainError::Empty`] when it was taken; `f`'s errors.
    pub fn with<T>(&self, index: usize, f: impl FnOnce(&M) -> Result<T>) -> Result<T> {
        let guard = self
            .0
            .get(index)
            .and_then(|m| m.lock().ok())
            .ok_or_else(|| TrainError::Empty(format!("no model for worker {index}")))?;
        match guard.as_ref() {
            Some(m) => f(m),
            None => Err(TrainError::Empty(format!(
                "worker {index}'s model was already taken"
            ))),
        }
    }

    /// The copy of local worker `index` (once).
    ///
    /// # Errors
    /// [`TrainError::Empty`] when it was already taken.
    pub fn take(&self, index: usize) -> Result<M> {
        self.0
            .get(index)
            .and_then(|m| m.lock().ok().and_then(|mut m| m.take()))
            .ok_or_else(|| TrainError::Empty(format!("worker {index}'s model was already taken")))
    }
}

/// What every worker learns from a step's exchange.
#[derive(Debug)]
pub struct Synced {
    /// The gradients summed over all workers (only parameters some worker had a gradient
    /// for).
    pub grads: GradientsParams,
    /// Each metric summed over all workers.
    pub stats: Vec<f64>,
}

/// A float parameter of the model: its id, dims, and this worker's flattened gradient.
struct Slot<B: Backend> {
    id: ParamId,
    dims: Vec<usize>,
    grad: Option<Tensor<B, 1>>,
}

/// Takes every float parameter's gradient out of `grads`, flattened, in visit order.
struct Take<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    slots: Vec<Slot<B::InnerBackend>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Take<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let grad = self.grads.remove::<B::InnerBackend, D>(param.id);
        let dims = param.val().dims().to_vec();
        let n: usize = dims.iter().product();
        self.slots.push(Slot {
            id: param.id,
            dims,
            grad: grad.map(|g| g.reshape([n])),
        });
    }
}

/// Registers the reduced gradients back with each parameter's rank.
struct Put<'a, B: AutodiffBackend> {
    reduced: &'a mut std::collections::HashMap<ParamId, Tensor<B::InnerBackend, 1>>,
    out: GradientsParams,
    _b: PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Put<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(flat) = self.reduced.remove(&param.id) {
            let dims: [usize; D] = param.val().dims();
            self.out.register(param.id, flat.reshape(dims));
        }
    }
}

impl<B: AutodiffBackend> Worker<B> {
    /// Whether this worker writes the run's files (metrics, checkpoints, the final model).
    pub fn is_first(&self) -> bool {
        self.rank == 0
    }

    /// This worker's index among the workers of its node.
    pub fn local_index(&self) -> usize {
        self.rank % self.devices_per_node
    }

    /// Every worker's `local` values (`Err`: none) gathered in rank order: `lens[i]` values
    /// for item `i`, this worker filling the items of `mine`. One sum over all workers (each
    /// item is filled by one worker, the others add zeros); a worker whose part failed still
    /// takes part, so every worker returns `Err` then.
    ///
    /// # Errors
    /// This worker's own error; [`TrainError::Collective`] when another worker failed.
    pub fn gather(
        &self,
        lens: &[usize],
        mine: Range<usize>,
        local: Result<Vec<Vec<f32>>>,
    ) -> Result<Vec<Vec<f32>>> {
        let offsets: Vec<usize> = std::iter::once(0)
            .chain(lens.iter().scan(0, |acc, &n| {
                *acc += n;
                Some(*acc)
            }))
            .collect();
        let total = offsets[lens.len()];
        let mut flat = vec![0f32; total + 1];
        match &local {
            Ok(parts) => {
                for (i, part) in mine.clone().zip(parts) {
                    let n = lens[i].min(part.len());
                    flat[offsets[i]..offsets[i] + n].copy_from_slice(&part[..n]);
                }
            }
            Err(_) => flat[total] = 1.0,
        }
        let summed = self.sum(&flat)?;
        local?;
        if summed[total] > 0.0 {
            return Err(TrainError::Collective(PEER_FAILED.into()));
        }
        Ok((0..lens.len())
            .map(|i| summed[offsets[i]..offsets[i + 1]].to_vec())
            .collect())
    }

    /// This worker's part of a batch of `n` units ([`shard`]).
    pub fn shard(&self, n: usize) -> Range<usize> {
        shard(self.rank, self.world, n)
    }

    /// The sum over all workers of `values` (burn's all-reduce on a 1-D tensor).
    ///
    /// # Errors
    /// [`TrainError::Collective`].
    pub fn sum(&self, values: &[f32]) -> Result<Vec<f32>> {
        if !self.collective {
            return Ok(values.to_vec());
        }
        let t = Tensor::<B::InnerBackend, 1>::from_data(
            TensorData::new(values.to_vec(), [values.len()]),
            &self.device,
        );
        let t = self.all_reduce(t)?;
        let mut v = t
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| TrainError::Collective(format!("{e:?}")))?;
        v.truncate(values.len());
        Ok(v)
    }

    /// burn's all-reduce (sum) of `t`. Between nodes burn sums in a ring, which needs at least
    /// one element per node: shorter tensors are padded with zeros (the result keeps the
    /// padding; callers read their own length).
    fn all_reduce(&self, t: Tensor<B::InnerBackend, 1>) -> Result<Tensor<B::InnerBackend, 1>> {
        let n = t.dims()[0];
        let t = if n < self.world {
            Tensor::cat(vec![t, Tensor::zeros([self.world - n], &self.device)], 0)
        } else {
            t
        };
        let out = burn_collective::all_reduce::<B::InnerBackend>(
            self.peer,
            t.into_primitive().tensor(),
            ReduceOperation::Sum,
        )
        .map_err(collective_err)?;
        Ok(Tensor::from_primitive(TensorPrimitive::Float(out)))
    }

    /// The step's exchange: `local` is this worker's gradients and metric values (`Err` when
    /// its micro-batches failed: it still takes part, so that every worker stops). Returns the
    /// summed gradients and metrics.
    ///
    /// # Errors
    /// This worker's own error; [`TrainError::Collective`] when another worker failed or the
    /// collective did.
    pub fn sync<M: AutodiffModule<B>>(
        &self,
        model: &M,
        local: Result<(GradientsParams, Vec<f64>)>,
        stats_len: usize,
    ) -> Result<Synced> {
        if !self.collective {
            let (grads, stats) = local?;
            return Ok(Synced { grads, stats });
        }
        let (failed, mut grads, stats) = match local {
            Ok((g, s)) => (None, g, s),
            Err(e) => (Some(e), GradientsParams::new(), vec![0.0; stats_len]),
        };
        let mut take = Take::<B> {
            grads: &mut grads,
            slots: Vec::new(),
        };
        model.visit(&mut take);
        let slots = take.slots;
        // The header: failed, the metrics, then one presence flag per parameter.
        let mut header = vec![f32::from(u8::from(failed.is_some()))];
        header.extend((0..stats_len).map(|i| stats.get(i).copied().unwrap_or(0.0) as f32));
        header.extend(slots.iter().map(|s| f32::from(u8::from(s.grad.is_some()))));
        let header = self.sum(&header)?;
        if let Some(e) = failed {
            return Err(e);
        }
        if header[0] > 0.0 {
            return Err(TrainError::Collective(PEER_FAILED.into()));
        }
        let stats = header[1..1 + stats_len]
            .iter()
            .map(|&v| f64::from(v))
            .collect();
        let present = &header[1 + stats_len..];
        let mut pieces = Vec::new();
        let mut kept = Vec::new();
        for (slot, &p) in slots.into_iter().zip(present) {
            if p > 0.0 {
                let n: usize = slot.dims.iter().product();
                pieces.push(
                    slot.grad
                        .unwrap_or_else(|| Tensor::zeros([n], &self.device)),
                );
                kept.push((slot.id, n));
            }
        }
        let mut reduced = std::collections::HashMap::new();
        if !pieces.is_empty() {
            let bucket = Tensor::cat(pieces, 0);
            let bucket = match &self.bucket_reduce {
                Some((f, ids)) => f(bucket, ids),
                None => self.all_reduce(bucket)?,
            };
            let mut at = 0;
            for (id, n) in kept {
                reduced.insert(id, bucket.clone().slice(at..at + n));
                at += n;
            }
        }
        let mut put = Put::<B> {
            reduced: &mut reduced,
            out: GradientsParams::new(),
            _b: PhantomData,
        };
        model.visit(&mut put);
        Ok(Synced {
            grads: put.out,
            stats,
        })
    }

    /// The sum over all workers of `value` (`None`: this worker failed; every worker then
    /// gets `Err`, so that all stop at the same point).
    ///
    /// # Errors
    /// [`TrainError::Collective`] when some worker passed `None` or the collective failed.
    pub fn agree_sum(&self, value: Option<f64>) -> Result<f64> {
        if !self.collective {
            return value.ok_or_else(|| TrainError::Collective(PEER_FAILED.into()));
        }
        let v = self.sum(&[
            f32::from(u8::from(value.is_none())),
            value.unwrap_or(0.0) as f32,
        ])?;
        if v[0] > 0.0 {
            return Err(TrainError::Collective(PEER_FAILED.into()));
        }
        Ok(f64::from(v[1]))
    }

    /// Whether `flag` holds on any worker (a stop request, read after the step).
    ///
    /// # Errors
    /// [`TrainError::Collective`].
    pub fn any(&self, flag: bool) -> Result<bool> {
        if !self.collective {
            return Ok(flag);
        }
        Ok(self.sum(&[f32::from(u8::from(flag))])?[0] > 0.0)
    }

    /// A barrier that carries a failure: every worker calls it at the same point; returns
    /// `Err` on every worker when one of them passes `Err`.
    ///
    /// # Errors
    /// This worker's own error, or [`TrainError::Collective`] when another worker failed.
    pub fn agree<T>(&self, local: Result<T>) -> Result<T> {
        if !self.collective {
            return local;
        }
        let flag = [f32::from(u8::from(local.is_err()))];
        let failed = self.sum(&flag)?[0] > 0.0;
        match local {
            Err(e) => Err(e),
            Ok(_) if failed => Err(TrainError::Collective(PEER_FAILED.into())),
            Ok(v) => Ok(v),
        }
    }
}

/// Runs burn's global collective orchestrator on `port` until the process ends (one per
/// multi-node run, on a machine every node reaches).
///
/// # Errors
/// [`TrainError::Collective`] when the runtime cannot start.
pub fn orchestrator(port: u16) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| TrainError::Collective(format!("cannot start the runtime: {e}")))?;
    rt.block_on(burn_collective::start_global_orchestrator(port));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shards of a batch are disjoint, contiguous, in rank order and cover it, their sizes
    /// differing by at most one.
    #[test]
    fn shards_are_disjoint_and_cover_the_batch() {
        for world in 1..=5 {
            for n in 0..=13 {
                let parts: Vec<_> = (0..world).map(|r| shard(r, world, n)).collect();
                let covered: Vec<usize> = parts.iter().flat_map(|r| r.clone()).collect();
                assert_eq!(covered, (0..n).collect::<Vec<_>>(), "world {world} n {n}");
                let sizes: Vec<usize> = parts.iter().map(|r| r.len()).collect();
                let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
                assert!(hi - lo <= 1, "{sizes:?}");
            }
        }
        assert_eq!(shard(0, 3, 8), 0..3);
        assert_eq!(shard(1, 3, 8), 3..6);
        assert_eq!(shard(2, 3, 8), 6..8);
    }
}
