"""Performance: change points over a metric's history and the verdict of one metric against its
baseline. Pure functions over plain numbers; storing metrics and drawing trends are elsewhere."""
