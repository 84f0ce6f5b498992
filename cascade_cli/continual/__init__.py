"""Class-incremental learning on the CascadeFormer backbone: tasks of disjoint classes seen one after
another, one head over all classes, and a memory buffer of earlier tasks' clips (CHARON and its
Mammoth baselines; reference continual_learning.md).

    tasks.py    class orders and the split of a dataset's classes into tasks
    buffer.py   the reservoir buffer every rehearsal method shares, with CHARON's frame compression
"""
