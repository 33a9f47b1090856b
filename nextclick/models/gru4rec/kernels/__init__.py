"""Compiled (numba) loops of GRU4Rec's training step.

Each fuses what would otherwise be a chain of whole-array tensor operations into one or two
passes over the data a step touches. They run on zero-copy numpy views of the tensors; the
arithmetic is float32 like the tensors (row sums of the losses in float64), so results equal the
tensor-operation form up to rounding. Compilation and its disk cache: :mod:`nextclick.compiled`.

* :mod:`.blas` -- scipy's ``sgemm`` on strided blocks of arrays (no copies);
* :mod:`.exp` -- a vectorised exponential and maximum;
* :mod:`.losses` -- cross-entropy and BPR-max with their gradients, a row at a time, and a
  step's output columns (distinct negatives with their counts);
* :mod:`.gru` -- a GRU layer's gates forward (the compiled twin of
  :func:`nextclick.models.gru4rec.net.gru_cell`) and backward, counter-based dropout;
* :mod:`.adagrad` -- Adagrad with momentum on flat vectors and on touched rows;
* :mod:`.phases` -- the phases of a training step, split over numba's threads, taking named
  tuples of arrays.

Importing this package imports nothing; the trainer imports the modules it calls.
"""
