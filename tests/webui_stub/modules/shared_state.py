"""modules/shared_state.py: job state, progress fields and the Interrupt flag."""


class State:
    def __init__(self):
        self.job = ""
        self.job_count = 0
        self.job_no = 0
        self.sampling_step = 0
        self.sampling_steps = 0
        self.textinfo = None
        self.interrupted = False
        self.skipped = False
        self.stopping_generation = False
        self.begun = []

    def begin(self, job="(unknown)"):
        self.job = job
        self.job_count = -1
        self.job_no = 0
        self.sampling_step = 0
        self.interrupted = False
        self.skipped = False
        self.stopping_generation = False
        self.textinfo = None
        self.begun.append(job)

    def end(self):
        self.job = ""
        self.job_count = 0

    def interrupt(self):
        self.interrupted = True

    def nextjob(self):
        self.job_no += 1
        self.sampling_step = 0
