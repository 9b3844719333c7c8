"""Names shared across processes and files: each is read by one part of the house and set by another."""

# A study runner's claim file, set for each MaskTrainer it starts; the run refreshes it after every epoch.
CLAIM_ENV = "MASKTRAINER_CLAIM"
# Thread limits the study runner sets per job and a run records; TensorFlow's results depend on them in the last bits.
THREAD_ENV = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "PJRT_NPROC", "OMP_NUM_THREADS")
