//! The processes of a training run and the collectives a data-parallel step needs: one process ([`Solo`]), or
//! the ranks `mpirun` started (`Mpi`, with the `mpi` feature).

/// The ranks of a run. Every rank calls each collective in the same order with the same lengths.
pub trait Group {
    /// This process's rank, 0 .. size.
    fn rank(&self) -> usize;

    /// Processes in the run.
    fn size(&self) -> usize;

    /// Whether an MPI launcher started the run: its steps then always go through the exchange, even on one rank
    /// (where the exchange changes nothing, and `--profile` shows what each part costs).
    fn launched(&self) -> bool;

    /// Every rank's `local` (the same length on every rank), concatenated in rank order.
    fn all_gather_f32(&self, local: &[f32]) -> Vec<f32>;

    fn all_gather_u64(&self, local: &[u64]) -> Vec<u64>;

    fn all_gather_u8(&self, local: &[u8]) -> Vec<u8>;

    /// Rank 0's `data` on every rank.
    fn broadcast_f32(&self, data: &mut [f32]);

    /// Returns once every rank has called it.
    fn barrier(&self);

    /// Ends every rank now with status `code`: after a failure on this rank that the others cannot see.
    fn abort(&self, code: i32) -> !;

    /// Every rank's text, in rank order (texts of any lengths).
    fn all_gather_text(&self, local: &str) -> Vec<String> {
        let lengths = self.all_gather_u64(&[local.len() as u64]);
        let longest = lengths.iter().copied().max().unwrap_or(0) as usize;
        let mut padded = local.as_bytes().to_vec();
        padded.resize(longest, 0);
        let all = self.all_gather_u8(&padded);
        lengths
            .iter()
            .enumerate()
            .map(|(rank, &len)| {
                let start = rank * longest;
                String::from_utf8_lossy(&all[start..start + len as usize]).into_owned()
            })
            .collect()
    }
}

/// A run of one process: every collective is the identity.
#[derive(Clone, Copy, Debug, Default)]
pub struct Solo;

impl Group for Solo {
    fn rank(&self) -> usize {
        0
    }

    fn size(&self) -> usize {
        1
    }

    fn launched(&self) -> bool {
        false
    }

    fn all_gather_f32(&self, local: &[f32]) -> Vec<f32> {
        local.to_vec()
    }

    fn all_gather_u64(&self, local: &[u64]) -> Vec<u64> {
        local.to_vec()
    }

    fn all_gather_u8(&self, local: &[u8]) -> Vec<u8> {
        local.to_vec()
    }

    fn broadcast_f32(&self, _data: &mut [f32]) {}

    fn barrier(&self) {}

    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

/// The ranks `mpirun` (Open MPI, MPICH) started, through rsmpi. MPI is finalised when this is dropped.
#[cfg(feature = "mpi")]
pub struct Mpi {
    _universe: mpi::environment::Universe,
    world: mpi::topology::SimpleCommunicator,
}

#[cfg(feature = "mpi")]
impl Mpi {
    /// Initialises MPI; None if it was initialised already.
    pub fn initialize() -> Option<Self> {
        let universe = mpi::initialize()?;
        let world = universe.world();
        Some(Self {
            _universe: universe,
            world,
        })
    }
}

#[cfg(feature = "mpi")]
impl Group for Mpi {
    fn rank(&self) -> usize {
        use mpi::traits::Communicator;
        self.world.rank() as usize
    }

    fn size(&self) -> usize {
        use mpi::traits::Communicator;
        self.world.size() as usize
    }

    fn launched(&self) -> bool {
        true
    }

    fn all_gather_f32(&self, local: &[f32]) -> Vec<f32> {
        use mpi::traits::CommunicatorCollectives;
        let mut all = vec![0.0f32; local.len() * self.size()];
        self.world.all_gather_into(local, &mut all[..]);
        all
    }

    fn all_gather_u64(&self, local: &[u64]) -> Vec<u64> {
        use mpi::traits::CommunicatorCollectives;
        let mut all = vec![0u64; local.len() * self.size()];
        self.world.all_gather_into(local, &mut all[..]);
        all
    }

    fn all_gather_u8(&self, local: &[u8]) -> Vec<u8> {
        use mpi::traits::CommunicatorCollectives;
        let mut all = vec![0u8; local.len() * self.size()];
        self.world.all_gather_into(local, &mut all[..]);
        all
    }

    fn broadcast_f32(&self, data: &mut [f32]) {
        use mpi::traits::{Communicator, Root};
        self.world.process_at_rank(0).broadcast_into(data);
    }

    fn barrier(&self) {
        use mpi::traits::CommunicatorCollectives;
        self.world.barrier();
    }

    fn abort(&self, code: i32) -> ! {
        use mpi::traits::Communicator;
        self.world.abort(code)
    }
}

/// The rank and size an MPI launcher gave this process in its environment (Open MPI's `mpirun`, MPICH's Hydra),
/// and its rank among the processes on this machine; None when no launcher started it.
pub fn launcher_ranks() -> Option<(usize, usize, usize)> {
    let read = |names: &[&str]| {
        names
            .iter()
            .find_map(|name| std::env::var(name).ok()?.trim().parse::<usize>().ok())
    };
    let size = read(&["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"])?;
    let rank = read(&["OMPI_COMM_WORLD_RANK", "PMI_RANK"]).unwrap_or(0);
    let local = read(&["OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID"]).unwrap_or(rank);
    Some((rank, size, local))
}

/// The processes of this command: the ranks an MPI launcher started (with the `mpi` feature), or this process
/// alone. Returns the group and this process's rank on its machine (which picks among several GPUs).
pub fn join() -> Result<(Box<dyn Group>, usize), String> {
    match launcher_ranks() {
        Some((_, size, local)) => join_launched(size, local),
        None => Ok((Box::new(Solo), 0)),
    }
}

#[cfg(feature = "mpi")]
fn join_launched(_size: usize, local: usize) -> Result<(Box<dyn Group>, usize), String> {
    let mpi = Mpi::initialize().ok_or("MPI was initialised twice")?;
    Ok((Box::new(mpi), local))
}

/// Without MPI a launched rank would train alone, as if it were the only one: refused.
#[cfg(not(feature = "mpi"))]
fn join_launched(size: usize, _local: usize) -> Result<(Box<dyn Group>, usize), String> {
    if size > 1 {
        return Err(format!(
            "started as one of {size} MPI ranks, but this latent was built without the mpi feature: every rank \
             would train alone; rebuild with `cargo build --release --features mpi`"
        ));
    }
    Ok((Box::new(Solo), 0))
}
