"""Live pose streams: frames read one JSON line at a time, as pose tools emit them, for `cascade predict
--stream` to classify in sliding windows."""
