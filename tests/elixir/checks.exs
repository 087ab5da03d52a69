# Named checks for the two-way BEAM scripts (tests/elixir/twoway_client.exs and
# twoway_genserver.exs): each prints ok/FAIL, a step that raises is one failed check, and
# finish/1 prints the summary line and halts with the outcome.

defmodule Checks do
  def equal(name, actual, expected),
    do: check(name, actual == expected, "expected #{inspect(expected)}, got #{inspect(actual)}")

  def check(name, true, _), do: record(name, :ok, nil)
  def check(name, _, detail), do: record(name, :fail, detail)

  def note(text), do: IO.puts("note #{text}")

  def step(name, fun) do
    IO.puts("# #{name}")
    try do
      fun.()
    rescue
      error -> record("#{name} (aborted)", :fail, Exception.format(:error, error, __STACKTRACE__))
    end
  end

  # The last line the pytest wrappers read: "LABEL: N passed, M failed".
  def finish(label) do
    {passed, failed} = Process.get(:checks, {0, 0})
    IO.puts("#{label}: #{passed} passed, #{failed} failed")
    System.halt(if failed == 0, do: 0, else: 1)
  end

  defp record(name, outcome, detail) do
    {passed, failed} = Process.get(:checks, {0, 0})
    case outcome do
      :ok -> IO.puts("ok   #{name}"); Process.put(:checks, {passed + 1, failed})
      :fail -> IO.puts("FAIL #{name}: #{detail}"); Process.put(:checks, {passed, failed + 1})
    end
  end

  def wait_exit(pid) do
    ref = Process.monitor(pid)

    receive do
      {:DOWN, ^ref, :process, _, _} -> :ok
    after
      5_000 -> raise "process #{inspect(pid)} did not exit"
    end
  end

  # Polls `fun` until it returns true, for at most `ms` milliseconds.
  def eventually(fun, ms), do: poll(fun, System.monotonic_time(:millisecond) + ms)

  defp poll(fun, deadline) do
    cond do
      fun.() -> true
      System.monotonic_time(:millisecond) > deadline -> false
      true -> Process.sleep(20); poll(fun, deadline)
    end
  end
end
