// JDBC and Spring @Transactional: take the lock with the first statement of
// the transaction; commit releases it once the commit is visible.
//
// Build and run (Debian: libpostgresql-jdbc-java, libspring-context-java,
// libspring-transaction-java, libspring-jdbc-java), PG* environment set:
//   J=/usr/share/java
//   CP=$J/postgresql.jar:$J/spring3-core.jar:$J/spring3-beans.jar:$J/spring3-context.jar:\
//      $J/spring3-aop.jar:$J/spring3-expression.jar:$J/spring3-jdbc.jar:\
//      $J/spring3-transaction.jar:$J/commons-logging.jar:$J/aopalliance.jar
//   javac -cp $CP -d out RedlockExample.java
//   java -cp $CP:out RedlockExample

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.util.ArrayList;
import java.util.List;
import javax.sql.DataSource;

import org.springframework.aop.framework.ProxyFactory;
import org.springframework.jdbc.core.JdbcTemplate;
import org.springframework.jdbc.datasource.DataSourceTransactionManager;
import org.springframework.jdbc.datasource.DriverManagerDataSource;
import org.springframework.transaction.PlatformTransactionManager;
import org.springframework.transaction.annotation.AnnotationTransactionAttributeSource;
import org.springframework.transaction.annotation.Transactional;
import org.springframework.transaction.interceptor.TransactionInterceptor;

public class RedlockExample {

    // Plain JDBC: autocommit off, the lock first, commit releases it.
    static void incrementWithJdbc(Connection c) throws SQLException {
        c.setAutoCommit(false);
        try {
            try (PreparedStatement lock = c.prepareStatement("SELECT redlock_acquire(?)")) {
                lock.setString(1, "counter:1");
                lock.executeQuery();
            }
            int n;
            try (ResultSet rs = c.createStatement()
                    .executeQuery("SELECT n FROM example_counter WHERE id = 1")) {
                rs.next();
                n = rs.getInt(1);
            }
            try (PreparedStatement up = c.prepareStatement(
                    "UPDATE example_counter SET n = ? WHERE id = 1")) {
                up.setInt(1, n + 1);
                up.executeUpdate();
            }
            c.commit();
        } catch (SQLException e) {
            c.rollback();           // 55P03 and 40001 are worth a retry
            throw e;
        }
    }

    // Spring: one call at the start of the @Transactional method.
    public interface CounterService {
        void increment();
    }

    public static class JdbcCounterService implements CounterService {
        private final JdbcTemplate jdbc;

        public JdbcCounterService(JdbcTemplate jdbc) {
            this.jdbc = jdbc;
        }

        @Override
        @Transactional
        public void increment() {
            jdbc.queryForObject("SELECT redlock_acquire(?)", Long.class, "counter:1");
            int n = jdbc.queryForObject("SELECT n FROM example_counter WHERE id = 1", Integer.class);
            jdbc.update("UPDATE example_counter SET n = ? WHERE id = 1", n + 1);
        }
    }

    // The wiring @EnableTransactionManagement does in an application: a proxy
    // that runs each @Transactional method in a transaction.  (Spelled out
    // here because Debian's Spring 4.3 cannot enhance @Configuration classes
    // on Java 17; the service code is the same either way.)
    static CounterService transactional(CounterService target, DataSource dataSource) {
        PlatformTransactionManager tm = new DataSourceTransactionManager(dataSource);
        ProxyFactory proxy = new ProxyFactory(target);
        proxy.addInterface(CounterService.class);
        proxy.addAdvice(new TransactionInterceptor(tm, new AnnotationTransactionAttributeSource()));
        return (CounterService) proxy.getProxy();
    }

    static String url() {
        return "jdbc:postgresql://127.0.0.1:" + System.getenv("PGPORT") + "/"
                + System.getenv("PGDATABASE") + "?user=" + System.getenv("PGUSER");
    }

    // Eight JDBC and eight Spring increments at once: never a lost one.
    public static void main(String[] args) throws Exception {
        try (Connection c = DriverManager.getConnection(url())) {
            c.createStatement().execute(
                    "CREATE TABLE IF NOT EXISTS example_counter (id int PRIMARY KEY, n int NOT NULL)");
            c.createStatement().execute(
                    "INSERT INTO example_counter VALUES (1, 0) ON CONFLICT (id) DO UPDATE SET n = 0");
        }
        DataSource dataSource = new DriverManagerDataSource(url());
        CounterService service = transactional(
                new JdbcCounterService(new JdbcTemplate(dataSource)), dataSource);
        List<Thread> threads = new ArrayList<>();
        for (int i = 0; i < 8; i++) {
            threads.add(new Thread(() -> {
                try (Connection c = DriverManager.getConnection(url())) {
                    incrementWithJdbc(c);
                } catch (SQLException e) {
                    throw new RuntimeException(e);
                }
            }));
            threads.add(new Thread(service::increment));
        }
        threads.forEach(Thread::start);
        for (Thread t : threads) {
            t.join();
        }
        try (Connection c = DriverManager.getConnection(url());
             ResultSet rs = c.createStatement().executeQuery("SELECT n FROM example_counter WHERE id = 1")) {
            rs.next();
            System.out.println("counter = " + rs.getInt(1));
        }
    }
}
